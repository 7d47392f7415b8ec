//! Tokenizers: text to token ids and back.
//!
//! In scope: the byte tokenizer of the test model (one token per byte,
//! vocabulary 256), and the [`Tokenizer`] interface a real model's tokenizer
//! (BPE, SentencePiece) implements to plug into the same decode loop. Out of
//! scope: loading tokenizer files (a tokenizer is named by the model's
//! manifest; its tables would come through the host like the graph does).

/// Text to ids and ids to bytes. Decoding yields bytes, not text: a token may
/// end inside a UTF-8 sequence, and the output is reported as the exact bytes.
pub trait Tokenizer {
    /// The ids of `text`.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// The bytes token `id` stands for (empty for ids with no text, such as
    /// end-of-text).
    fn decode(&self, id: u32) -> Vec<u8>;
}

/// One token per byte.
#[derive(Debug, Clone, Copy)]
pub struct Byte;

impl Tokenizer for Byte {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, id: u32) -> Vec<u8> {
        u8::try_from(id).map(|b| vec![b]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let ids = Byte.encode("héllo");
        assert_eq!(ids.len(), 6);
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| Byte.decode(i)).collect();
        assert_eq!(bytes, "héllo".as_bytes());
        assert!(Byte.decode(256).is_empty());
    }
}
