//! The nginx reference: `proxy_pass` to the upstream fake with a keep-alive pool, one worker, access log on.

use std::path::Path;

/// nginx.conf for a single pinned worker listening on `port` in front of `upstream` (host:port).
/// Buffering is off so streamed chunks pass through as they come, as an LLM gateway must.
pub fn config(dir: &Path, port: u16, upstream: &str) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{
    worker_connections 8192;
    multi_accept on;
}}
http {{
    access_log {dir}/nginx-access.log combined buffer=64k flush=1s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream fake {{
        server {upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"
    )
}
