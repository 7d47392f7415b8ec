//! `edgecoder-spin-host`: serves a Spin application (spin.toml) over HTTP with
//! components run in-process by wasmtime 48.
//!
//! In scope: what the EdgeCoder conformance suite needs from Spin and nothing
//! more: HTTP trigger routing as Spin does it, per-request instances through
//! `wasi:http/incoming-handler`, the `spin-client-addr` and `spin-full-url`
//! headers, and the `fermyon:spin` key-value, sqlite and variables interfaces
//! with Spin's least-privilege rules. The Spin CLI is on no registry this project can
//! reach, so this host stands in for `spin up` in tests; operators use Spin.
//!
//! Outbound HTTP follows Spin's rules and nothing more (`host::OutboundPolicy`):
//! exact origins from `allowed_outbound_hosts` (default ports filled in), self
//! requests (no authority, or the host `self.alt`) sent to this host's own
//! listener, and service chaining (`http://<component>.spin.internal`) handed
//! in-process to the component with the headers Spin gives a chained request.
//! A URL naming the host `self` is refused, as Spin refuses it.
//!
//! Out of scope: other triggers, TLS, Spin's runtime-config and wildcard
//! allow-list entries.

mod host;
mod manifest;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{Config, Engine, Store};
use wasmtime::{Result, bail, format_err as anyhow};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::host::State;
use crate::manifest::App;

#[derive(Parser)]
#[command(about = "Serve a Spin application's components under wasmtime, for tests")]
struct Args {
    /// The application manifest.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where SQLite databases and key-value stores live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Application variable values, `name=value` (like SPIN_VARIABLE_NAME).
    #[arg(long = "var")]
    vars: Vec<String>,
    /// Serve this component file wherever the manifest names the release
    /// build (the test harnesses' build with the `danger-test-routes`
    /// feature); the manifest's routes, stores and variables still apply.
    #[arg(long)]
    source: Option<PathBuf>,
}

struct Served {
    component: Arc<manifest::Component>,
    pre: ProxyPre<State>,
}

pub(crate) struct Server {
    app: App,
    served: Vec<Served>,
    data_dir: PathBuf,
    /// The address this host listens on: where self requests go.
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut overrides = HashMap::new();
    for (k, v) in std::env::vars() {
        if let Some(name) = k.strip_prefix("SPIN_VARIABLE_") {
            overrides.insert(name.to_ascii_lowercase(), v);
        }
    }
    for kv in &args.vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--var takes name=value"))?;
        overrides.insert(k.to_owned(), v.to_owned());
    }
    let mut app = App::load(&args.manifest, &overrides)?;
    if let Some(source) = &args.source {
        for c in &mut app.components {
            c.source = source.clone();
        }
    }
    std::fs::create_dir_all(&args.data_dir)?;

    let engine = Engine::new(&Config::new())?;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    host::add_to_linker(&mut linker)?;

    // Components sharing one source are compiled once.
    let mut compiled: HashMap<PathBuf, Component> = HashMap::new();
    let mut served = Vec::new();
    for c in &app.components {
        let component = match compiled.get(&c.source) {
            Some(comp) => comp.clone(),
            None => {
                let comp = Component::from_file(&engine, &c.source)
                    .with_context(|| format!("loading {}", c.source.display()))?;
                compiled.insert(c.source.clone(), comp.clone());
                comp
            }
        };
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)
            .with_context(|| format!("component {} is not a wasi:http proxy", c.id))?;
        served.push(Served {
            component: Arc::new(c.clone()),
            pre,
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let server = Arc::new(Server {
        app,
        served,
        data_dir: args.data_dir,
        listen: listener.local_addr()?,
    });
    println!("spin-host listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { server.handle(req, peer).await }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        mut req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let path = req.uri().path().to_owned();
        let Some(route) = self.app.route(&path) else {
            let body = http_body_util::Full::new(hyper::body::Bytes::from_static(b"Not Found"));
            use http_body_util::BodyExt;
            return Ok(hyper::Response::builder()
                .status(404)
                .body(body.map_err(|never| match never {}).boxed_unsync())?);
        };
        let component = route.component;
        // Spin sets these itself; a client cannot supply them. `spin-full-url`
        // is the URL as the client addressed it (the `Host` it sent).
        let full_url = format!(
            "http://{}{}",
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        // Appended after whatever the client sent under the same names, as
        // Spin's executor extends the request's headers: the runtime must
        // read the last value.
        let headers = req.headers_mut();
        headers.append("spin-full-url", full_url.parse()?);
        headers.append("spin-client-addr", peer.to_string().parse()?);
        headers.insert(
            "spin-path-info",
            path.strip_prefix(&route.prefix).unwrap_or("").parse()?,
        );
        headers.insert(
            "spin-matched-route",
            format!(
                "{}{}",
                route.prefix,
                if route.wildcard { "/..." } else { "" }
            )
            .parse()?,
        );
        self.run(component, req).await
    }

    /// A service-chained request (`http://<id>.spin.internal/...`), as Spin's
    /// outbound interceptor hands it over: to the component by id, whatever
    /// its routes, from the client address `0.0.0.0:0`, with a `Host` naming
    /// `*.spin.internal` removed (so `spin-full-url` says `localhost`) and
    /// the whole path as `spin-path-info` under the synthetic route `/...`.
    pub(crate) async fn chained(
        self: Arc<Self>,
        id: &str,
        mut req: hyper::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let Some(component) = self.served.iter().position(|s| s.component.id == id) else {
            bail!("no component {id} in this app");
        };
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.split(':')
                    .next()
                    .unwrap_or("")
                    .ends_with(".spin.internal")
            })
            .unwrap_or("localhost")
            .to_owned();
        let scheme = req.uri().scheme_str().unwrap_or("http").to_owned();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let path = req.uri().path().to_owned();
        let headers = req.headers_mut();
        headers.remove("host");
        headers.insert(
            "spin-full-url",
            format!("{scheme}://{host}{path_and_query}").parse()?,
        );
        headers.insert("spin-client-addr", "0.0.0.0:0".parse()?);
        headers.insert("spin-path-info", path.parse()?);
        headers.insert("spin-matched-route", "/...".parse()?);
        Box::pin(self.run(component, req)).await
    }

    /// Runs one request through a fresh instance of a component.
    async fn run<B>(
        self: Arc<Self>,
        component: usize,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>>
    where
        B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let served = &self.served[component];
        let mut store = Store::new(
            served.pre.engine(),
            State {
                wasi: WasiCtx::builder().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                component: Arc::clone(&served.component),
                data_dir: self.data_dir.clone(),
                outbound: host::OutboundPolicy {
                    allowed: served.component.allowed_outbound_hosts.clone(),
                    app: Arc::downgrade(&self),
                    self_origin: self.listen.to_string(),
                },
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let wasi_req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = served.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, wasi_req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(wasmtime::Error::new(e)),
            Err(_) => match task.await {
                Ok(Ok(())) => bail!("component never set a response"),
                Ok(Err(e)) => Err(e.context("component trapped before responding")),
                Err(e) => Err(wasmtime::Error::new(e)),
            },
        }
    }
}
