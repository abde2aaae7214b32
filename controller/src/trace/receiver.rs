//! For tests: an OTLP/HTTP receiver on loopback that decodes what it is sent with the protobuf types
//! of `opentelemetry-proto` (independent of the exporter's encoding), or that never answers.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value, trace::v1::Span,
};
use prost::Message as _;
use tokio::net::TcpListener;

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
pub struct Received {
    pub span: Span,
    pub resource: Vec<(String, String)>,
    /// The request's headers, as sent.
    pub headers: Vec<(String, String)>,
    /// The request's target, as sent.
    pub target: String,
}

impl Received {
    /// An attribute as text (strings as they are, numbers printed).
    pub fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => i.to_string(),
            any_value::Value::BoolValue(b) => b.to_string(),
            any_value::Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// A running receiver; its task ends with the test's runtime.
pub struct Receiver {
    pub url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers every export 200 and keeps its spans.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), v.to_str().unwrap_or_default().to_string())
                                })
                                .collect::<Vec<_>>();
                            let target = req.uri().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let request = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in request.resource_spans {
                                let resource: Vec<(String, String)> = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                        any_value::Value::StringValue(s) => {
                                            Some((kv.key.clone(), s.clone()))
                                        }
                                        _ => None,
                                    })
                                    .collect();
                                for ss in rs.scope_spans {
                                    for span in ss.spans {
                                        kept.lock().unwrap().push(Received {
                                            span,
                                            resource: resource.clone(),
                                            headers: headers.clone(),
                                            target: target.clone(),
                                        });
                                    }
                                }
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { url, spans }
    }

    /// Accepts connections and never answers (a collector that hangs).
    pub async fn silent() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Self {
            url,
            spans: Arc::default(),
        }
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}
