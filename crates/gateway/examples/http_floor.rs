//! The floor of the HTTP path: a bare hyper HTTP/1.1 server that reads each
//! request body and answers a constant `{"valid":true}`, nothing else. It
//! measures what hyper and tokio cost on this machine before keyward does
//! any work, so a benchmark of `/v1/keys/verify` can be read against it.
//!
//! ```sh
//! cargo run --release -p keyward-gateway --example http_floor -- 127.0.0.1:8099 [multi|per-core]
//! wrk -t2 -c64 -d10s http://127.0.0.1:8099/
//! ```
//!
//! `multi` (the default) is tokio's work-stealing runtime with one worker per
//! core, as `keyward serve` runs; `per-core` is one single-threaded runtime
//! per core, each accepting on its own `SO_REUSEPORT` socket.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read (and bound) the body as keyward does, then answer a constant.
    let read = http_body_util::Limited::new(req.into_body(), 1 << 20).collect().await;
    let mut res = Response::new(Full::new(Bytes::from_static(br#"{"valid":true}"#)));
    res.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if read.is_err() {
        *res.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
    }
    Ok(res)
}

async fn accept_loop(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await;
        });
    }
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8099".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mode = args.next().unwrap_or_else(|| "multi".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    match mode.as_str() {
        "per-core" => {
            let threads: Vec<_> = (0..cores)
                .map(|_| {
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        rt.block_on(async {
                            accept_loop(reuse_port_listener(addr)?).await;
                            Ok::<_, std::io::Error>(())
                        })
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
            Ok(())
        }
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build()?;
            rt.block_on(async {
                accept_loop(reuse_port_listener(addr)?).await;
                Ok(())
            })
        }
    }
}
