//! REST services end to end (issue 16): an AIRoute with `spec.rest`, its OpenAPI ConfigMap and its
//! credential Secret applied with kubectl; the real controller compiles them and both proxies forward
//! the declared operations to a service on 127.0.0.1, with the service's credential only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_e2e::eventually;

use crate::fixtures::{KEY, base_yaml, condition, controller_and_proxies, wait_condition};
use crate::support::{Proxy, Setup};

const SERVICE_TOKEN: &str = "svc-e2e-token-0123456789";

/// A service that answers every request with its request line as JSON, keeping every request head.
async fn service() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(head);
                let body = serde_json::json!({ "request": line }).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, heads)
}

fn rest_yaml(service_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: orders-openapi
  labels:
    tollgate.dev/config: "true"
data:
  openapi.yaml: |
    openapi: 3.0.3
    info: {{title: orders, version: "1"}}
    paths:
      /items/{{id}}:
        get:
          operationId: getItem
          responses: {{"200": {{description: an item}}}}
      /items:
        post:
          operationId: createItem
          responses: {{"201": {{description: made}}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: orders-token
  labels:
    tollgate.dev/secret: "true"
stringData:
  token: {SERVICE_TOKEN}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: orders
spec:
  prefix: /orders
  approval: Automatic
  models:
    - name: fake-chat
      backends:
        - provider: fake
  rest:
    backend:
      url: http://127.0.0.1:{service_port}/v2
      credentials:
        secretRef: {{name: orders-token, key: token}}
        prefix: "Bearer "
    openAPI:
      configMapRef: {{name: orders-openapi, key: openapi.yaml}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: app-orders
spec:
  consumer: app
  route:
    name: orders
"#
    )
}

async fn get(proxy: &Proxy, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://127.0.0.1:{}{path}", proxy.port))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(Ok(response)) =
        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await
    else {
        return (0, "no answer".into());
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_rest_service_applied_with_kubectl_is_served_by_both_proxies() {
    let _serial = crate::SERIAL.lock().await;
    let setup = Setup::new("ctl-rest");
    let (port, heads) = service().await;
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&rest_yaml(port));

    for proxy in [&a, &b] {
        eventually(
            "GET /orders/api/items/42 served",
            Duration::from_secs(15),
            || async {
                match get(proxy, "/orders/api/items/42?full=1").await {
                    (200, body) if body.contains("GET /v2/items/42?full=1 HTTP/1.1") => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
        let (status, body) = get(proxy, "/orders/api/items").await;
        assert_eq!(status, 404, "GET /items is not declared: {body}");
        assert!(body.contains("unknown_operation"), "{body}");
    }
    for head in heads.lock().unwrap().iter() {
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains(&format!(
                "authorization: bearer {}",
                SERVICE_TOKEN.to_ascii_lowercase()
            )),
            "the service's credential is injected:\n{head}"
        );
        assert!(
            !head.contains(KEY),
            "the caller's key never goes upstream:\n{head}"
        );
    }

    let route = wait_condition(&setup, "airoute/orders", "Ready", "True").await;
    let ready = condition(&route, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ready.contains("REST service publishes 2 operations under /orders/api"),
        "{ready}"
    );

    // Deleting the ConfigMap is reported in the route's conditions, and the operations go away.
    setup
        .kubectl(&["delete", "configmap", "orders-openapi"])
        .unwrap();
    let route = wait_condition(&setup, "airoute/orders", "ResolvedRefs", "False").await;
    let refs = condition(&route, "ResolvedRefs").unwrap();
    assert_eq!(refs["reason"], "ConfigMapNotFound", "{refs}");
    for proxy in [&a, &b] {
        eventually(
            "REST operations withdrawn",
            Duration::from_secs(15),
            || async {
                match get(proxy, "/orders/api/items/42").await {
                    (404, body) if body.contains("unknown_operation") => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
    }
    println!(
        "route conditions after the ConfigMap was deleted: {}",
        refs["message"]
    );
}
