//! The minimal hyper forwarding proxy: accept, point the URI at the upstream, send it on a pooled
//! keep-alive connection, stream the answer back. No parsing, no policy: the floor for one Rust HTTP hop.

use std::net::SocketAddr;

use clap::Parser;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// The upstream, as host:port.
    #[arg(long, default_value = "127.0.0.1:18080")]
    upstream: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let upstream: &'static str = args.upstream.leak();
    let listener = tollgate_bench::listener(args.listen)?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    *req.uri_mut() = Uri::builder()
                        .scheme("http")
                        .authority(upstream)
                        .path_and_query(path)
                        .build()?;
                    let answer = client.request(req).await?;
                    anyhow::Ok::<Response<Incoming>>(answer)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
