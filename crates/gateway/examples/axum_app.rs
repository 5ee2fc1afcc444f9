//! An axum app whose routes need an API key, by one `.layer(...)`.
//!
//! Remote mode, against a running keyward server (a verify per request, so a
//! revocation or a rate limit acts on the very next request):
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:8080 KEYWARD_ROOT_KEY=kw_root_... \
//!   cargo run -p keyward-gateway --example axum_app
//! curl -H "X-API-Key: sk_..." http://127.0.0.1:3000/hello
//! ```
//!
//! Embedded mode (no `KEYWARD_URL`): keyward runs inside the app, in memory,
//! and prints a demo key at start.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use keyward_gateway::{KeyIdentity, KeywardLayer};
use keyward_service::Service;

/// The app: `GET /hello` answers who the key belongs to; `/health` is open.
pub fn app(layer: KeywardLayer) -> Router {
    let layer = layer.client_ip(|ext, _| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    Router::new().route("/hello", get(hello)).layer(layer).route("/health", get(|| async { "ok" }))
}

async fn hello(Extension(id): Extension<KeyIdentity>) -> String {
    format!("hello {} (key {})\n", id.owner_id.as_deref().unwrap_or("anonymous"), id.key_id)
}

/// Why the demo could not start.
type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// An in-memory keyward with one keyspace and one key for `owner`: the
/// service, its workspace, and the key.
pub async fn embedded_demo(
    owner: &str,
    key_body: serde_json::Value,
) -> Result<(Arc<Service>, String, String), DemoError> {
    let hasher = keyward_core::KeyHasher::new(&keyward_core::Pepper::generate(1), &[]);
    let service = Arc::new(Service::in_memory(hasher)?);
    let root = service.bootstrap().await?.ok_or("a new store makes a root key")?;
    let (workspace_id, root_key_id, role) = service.authenticate(&root.key)?;
    let actor = keyward_service::Actor {
        workspace_id: workspace_id.clone(),
        root_key_id,
        role,
        source_ip: None,
        request_id: None,
    };
    let ks = service
        .create_keyspace(&actor, serde_json::from_value(serde_json::json!({"name": "demo", "prefix": "demo"}))?)
        .await?;
    let mut body = key_body;
    body["keyspace_id"] = ks.id.clone().into();
    body["owner_id"] = owner.into();
    let key = service.create_key(&actor, serde_json::from_value(body)?).await?;
    Ok((service, workspace_id, key.key))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let layer = match (std::env::var("KEYWARD_URL"), std::env::var("KEYWARD_ROOT_KEY")) {
        (Ok(url), Ok(root)) => KeywardLayer::remote(&url, &root)?,
        _ => {
            let (service, ws, key) = embedded_demo("demo-user", serde_json::json!({"scopes": ["read"]})).await?;
            println!("embedded keyward; try: curl -H 'X-API-Key: {key}' http://127.0.0.1:3000/hello");
            KeywardLayer::embedded(service, ws)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .map_err(|e| format!("binding 127.0.0.1:3000 ({e}); is another app on that port?"))?;
    axum::serve(listener, app(layer).into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
