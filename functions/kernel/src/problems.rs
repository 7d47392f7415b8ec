//! The problem catalogue: every problem `code` a deployment can answer, what
//! it means, and its one page, generated from the error enums.
//!
//! In scope: [`ProblemType`] (one code as documented), [`catalogue`], which
//! turns an error enum's variants into entries (each variant converted into
//! its [`Problem`], so the catalogue cannot drift from what is sent), the
//! kernel's own entries ([`kernel`]), merging entries by code ([`merge`]), and
//! the page's HTML ([`render_html`]). Every problem's `type` is
//! [`type_uri`]: `/problems#<code>`, a URI reference resolved against the
//! request's URL, so on every deployment it names that deployment's own page.
//!
//! Out of scope: which function serves the page (the gateway) and the error
//! enums themselves (each crate lists its variants with `strum::EnumIter`).

use serde::Serialize;

use crate::{Error, Problem};

/// Where the catalogue page is served; problem types point into it.
pub const CATALOGUE_PATH: &str = "/problems";

/// The `type` of a problem with `code`: the catalogue entry's fragment.
pub fn type_uri(code: &str) -> String {
    format!("{CATALOGUE_PATH}#{code}")
}

/// One documented problem code. A code that several variants (or functions)
/// answer with appears once, with each distinct meaning under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemType {
    /// The stable snake_case code clients branch on.
    pub code: &'static str,
    /// The `type` URI reference problems with this code carry.
    #[serde(rename = "type")]
    pub type_: String,
    /// Each way the code is answered.
    pub meanings: Vec<Meaning>,
}

/// One way a code is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Meaning {
    /// HTTP status.
    pub status: u16,
    /// The problem's title.
    pub title: &'static str,
    /// What happened and what to do, for people.
    pub description: String,
    /// The function that answers it (`kernel` for every function).
    pub function: &'static str,
}

/// An error value and the doc comment of its variant.
pub struct Example<E> {
    /// One value of the variant (fields at their defaults).
    pub error: E,
    /// What the catalogue says about the variant: its `#[strum(message)]`
    /// where the doc comment is written for developers, else the doc
    /// comment (of the innermost enum, for a variant that wraps another).
    pub doc: Option<&'static str>,
}

/// What the catalogue says of a server-side failure: its causes are the
/// operator's business, so the variant's doc comment is not shown.
const SERVER_SIDE: &str = "The server could not complete the request. It logged the cause with the request id: retry later, and give the operator the request_id if it persists.";

/// Entries for every example of `function`'s error enum, one per variant.
pub fn catalogue<E: Into<Problem>>(
    function: &'static str,
    examples: impl IntoIterator<Item = Example<E>>,
) -> Vec<(&'static str, Meaning)> {
    examples
        .into_iter()
        .map(|Example { error, doc }| {
            let p: Problem = error.into();
            // The variant's text says what the code means in general; a
            // problem's detail is written for one occurrence (and the
            // example's is built from default data), so it is only the
            // fallback. A 5xx says nothing of its internal causes.
            let description = if p.status.is_server_error() {
                p.detail
                    .filter(|d| !d.trim().is_empty())
                    .unwrap_or_else(|| SERVER_SIDE.to_owned())
            } else {
                doc.map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|d| !d.is_empty())
                    .or_else(|| p.detail.filter(|d| !d.trim().is_empty()))
                    .unwrap_or_default()
            };
            (
                p.code,
                Meaning {
                    status: p.status.as_u16(),
                    title: p.title,
                    description,
                    function,
                },
            )
        })
        .collect()
}

/// The kernel's own entries: what every function can answer before its own
/// handler runs (routing, body cap, JSON, rate limits, storage).
pub fn kernel() -> Vec<(&'static str, Meaning)> {
    use strum::{EnumMessage, IntoEnumIterator};
    let mut out = catalogue(
        "kernel",
        Error::iter().map(|e| Example {
            doc: e.get_message().or_else(|| e.get_documentation()),
            error: e,
        }),
    );
    // A runtime's answer to a connection over its caps, written before any
    // request is parsed (the native server's accept loop).
    out.push((
        SERVER_BUSY.code,
        Meaning {
            status: 503,
            title: SERVER_BUSY.title,
            description: SERVER_BUSY.description.into(),
            function: "kernel",
        },
    ));
    out
}

/// A problem a runtime writes itself, outside any function.
pub struct RuntimeProblem {
    /// The code.
    pub code: &'static str,
    /// The title.
    pub title: &'static str,
    /// For the catalogue.
    pub description: &'static str,
}

/// The native server's answer to a connection over a cap.
pub const SERVER_BUSY: RuntimeProblem = RuntimeProblem {
    code: "server_busy",
    title: "Server busy",
    description: "The server has as many connections as it serves (in all, or from this address); retry after the Retry-After seconds.",
};

/// Merges entries by code, sorted by code, each meaning once.
pub fn merge(entries: impl IntoIterator<Item = (&'static str, Meaning)>) -> Vec<ProblemType> {
    let mut by_code: std::collections::BTreeMap<&'static str, Vec<Meaning>> = Default::default();
    for (code, meaning) in entries {
        let list = by_code.entry(code).or_default();
        // The same answer from several functions (e.g. `forbidden`) is one
        // meaning; the first function to list it names it.
        if !list.iter().any(|m| {
            m.status == meaning.status
                && m.title == meaning.title
                && m.description == meaning.description
        }) {
            list.push(meaning);
        }
    }
    by_code
        .into_iter()
        .map(|(code, mut meanings)| {
            meanings.sort();
            ProblemType {
                code,
                type_: type_uri(code),
                meanings,
            }
        })
        .collect()
}

/// The catalogue as one HTML page: a section per code whose `id` is the
/// code, the fragment of every problem's `type`. No script, no style
/// attribute, nothing from elsewhere.
pub fn render_html(types: &[ProblemType]) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>EdgeCoder Edge: problem codes</title>\n</head>\n<body>\n<main>\n\
         <h1>Problem codes</h1>\n<p>Every error this deployment answers is an RFC 9457 \
         <code>application/problem+json</code> body whose <code>code</code> is one of these \
         and whose <code>type</code> links here. Branch on <code>code</code>; titles and \
         details are for people. The same list as JSON: \
         <a href=\"/problems.json\">/problems.json</a>.</p>\n<nav aria-label=\"codes\">\n<ul>\n",
    );
    for t in types {
        page.push_str(&format!(
            "<li><a href=\"#{c}\"><code>{c}</code></a></li>\n",
            c = escape(t.code)
        ));
    }
    page.push_str("</ul>\n</nav>\n");
    for t in types {
        page.push_str(&format!(
            "<section id=\"{c}\">\n<h2><code>{c}</code></h2>\n<dl>\n",
            c = escape(t.code)
        ));
        for m in &t.meanings {
            page.push_str(&format!(
                "<dt>{status} {title} <small>({function})</small></dt>\n<dd>{description}</dd>\n",
                status = m.status,
                title = escape(m.title),
                function = escape(m.function),
                description = escape(&m.description),
            ));
        }
        page.push_str("</dl>\n</section>\n");
    }
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_variant_is_listed_with_a_description() {
        let entries = kernel();
        use strum::IntoEnumIterator;
        assert_eq!(entries.len(), Error::iter().count() + 1);
        for (code, m) in &entries {
            assert!(!m.description.is_empty(), "{code} has no description");
        }
        let codes: Vec<_> = entries.iter().map(|(c, _)| *c).collect();
        for code in [
            "not_found",
            "rate_limited",
            "payload_too_large",
            "server_busy",
        ] {
            assert!(codes.contains(&code), "{code} missing");
        }
    }

    #[test]
    fn merge_keeps_one_entry_per_code_and_each_distinct_meaning() {
        let m = |status, description: &str, function| Meaning {
            status,
            title: "T",
            description: description.into(),
            function,
        };
        let merged = merge([
            ("b", m(403, "x", "auth")),
            ("a", m(400, "y", "kernel")),
            ("b", m(403, "x", "mesh")),
            ("b", m(401, "z", "mesh")),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].code, "a");
        assert_eq!(merged[1].meanings.len(), 2);
        assert_eq!(merged[1].type_, "/problems#b");
    }

    #[test]
    fn the_page_has_an_anchor_per_code_and_escapes_text() {
        let page = render_html(&merge([(
            "weird",
            Meaning {
                status: 400,
                title: "<script>",
                description: "a & b".into(),
                function: "kernel",
            },
        )]));
        assert!(page.contains("<section id=\"weird\">"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a &amp; b"));
        assert!(!page.contains("<script>"));
    }
}
