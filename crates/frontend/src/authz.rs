//! OAuth discovery: the protected resource metadata (RFC 9728) of
//! `/mcp`, the authorization server metadata (RFC 8414) of the issuer, and the
//! `WWW-Authenticate` challenge of a 401 that points a client at them. Served only with
//! `MYMCP_OAUTH_ENABLED` and `MYMCP_PUBLIC_BASE_URL` (the issuer; its `/mcp` the resource).
//! The endpoints these documents name (`/authorize`, `/token`, `/revoke`, `/register`) and
//! the consent page are next; the executor decides every one of them.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The scopes of this server: `mymcp:rw` includes `mymcp:ro`.
const SCOPES: [&str; 2] = ["mymcp:ro", "mymcp:rw"];

/// RFC 9728 metadata of the resource `<base>/mcp`.
pub fn protected_resource(base: &str) -> Value {
    json!({
        "resource": format!("{base}/mcp"),
        "authorization_servers": [base],
        "scopes_supported": SCOPES,
        "bearer_methods_supported": ["header"],
        "resource_name": "mymcp",
    })
}

/// RFC 8414 metadata of the issuer `base`: authorization code with PKCE S256 only, public
/// clients (Client ID Metadata Documents, or registered), rotating refresh tokens, RFC 9207
/// `iss` in every redirect.
pub fn authorization_server(base: &str) -> Value {
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "registration_endpoint": format!("{base}/register"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// The `WWW-Authenticate` value of a 401 from `/mcp` (RFC 9728 §5.1, MCP authorization).
pub fn challenge(base: &str) -> String {
    format!(
        "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", scope=\"{}\"",
        SCOPES.join(" ")
    )
}

/// The `WWW-Authenticate` value of a 403 from `/mcp` when an OAuth client approved for
/// read-only calls a tool that needs rw: it may ask the person for more (MCP authorization,
/// scope challenge; RFC 6750 §3.1).
pub fn step_up(base: &str) -> String {
    format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", error_description=\"this client was approved for read-only\"",
        SCOPES.join(" ")
    )
}

/// CORS for what browser-based clients (the MCP Inspector's page, web apps) fetch themselves:
/// the metadata documents, `/register`, `/token` and `/revoke` answer any origin (`*`, never
/// with credentials: nothing there rests on a cookie) and preflights are answered here. Never
/// on `/authorize` and the consent page (navigations, held by a cookie) nor on `/mcp`.
pub async fn cors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{header, HeaderValue, Method, StatusCode};
    let any = HeaderValue::from_static("*");
    if request.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, any);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return r;
    }
    let mut r = next.run(request).await;
    r.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, any);
    r
}

/// The discovery routes of the issuer `base` when `on` (none otherwise).
pub fn routes<S: Clone + Send + Sync + 'static>(on: bool, base: &str) -> Router<S> {
    if !on || base.is_empty() {
        return Router::new();
    }
    let resource = protected_resource(base);
    let server = authorization_server(base);
    let resource_doc = {
        let r = resource.clone();
        move || std::future::ready(Json(r))
    };
    Router::new()
        // The path-suffixed form for `/mcp` (RFC 9728 §3.1), and the bare one that clients
        // try first.
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(move || std::future::ready(Json(resource))),
        )
        .route("/.well-known/oauth-protected-resource", get(resource_doc))
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || std::future::ready(Json(server))),
        )
        .layer(axum::middleware::from_fn(cors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_name_each_other_and_the_resource() {
        let base = "https://mcp.example.com";
        let r = protected_resource(base);
        assert_eq!(r["resource"], "https://mcp.example.com/mcp");
        assert_eq!(r["authorization_servers"][0], base);
        let s = authorization_server(base);
        assert_eq!(s["issuer"], base);
        assert_eq!(s["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(s["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            challenge(base),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mymcp:ro mymcp:rw\""
        );
    }
}
