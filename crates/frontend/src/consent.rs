//! The consent page: plain HTML that works on a phone, no script and
//! no external asset, so its Content-Security-Policy can forbid everything but its own form
//! and inline style; framing is denied (clickjacking), nothing is cached, no referrer leaves.
//! It names the client, the host its redirect goes to and the access asked for, shows the
//! approval code to type on the host, and reloads itself every few seconds until the request
//! is decided (a `<meta http-equiv="refresh">`, no JavaScript). "Deny" is a form POST that
//! carries the page's CSRF token. Every text from the client is escaped.
//!
//! With the password login on (`MYMCP_OAUTH_PAM`, the executor says so in `pam`), the page
//! also has a form for an account name and its password (posted to `<page>/login` with the
//! CSRF token); it then does not reload by itself, which would throw away what is being typed,
//! and offers a link to continue after an approval on the host instead. After a login that did
//! not approve, the executor's notice is shown above the form.

use mymcp_protocol::oauth::Waiting;
use mymcp_protocol::Role;

/// Headers of every consent page (name, value).
pub const HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

/// The Content-Security-Policy of a waiting page: [`HEADERS`]' own, with the origin of the
/// client's redirect URI added to `form-action` — browsers apply `form-action` to the
/// redirects that follow a form's submission too, and the answer to "Deny" sends the browser
/// on to the client. A redirect URI whose origin cannot be written as a source keeps the
/// page's own policy (the browser then stays on this server).
pub fn content_security_policy(redirect_uri: &str) -> String {
    let own = HEADERS[0].1;
    match redirect_source(redirect_uri) {
        Some(source) => own.replace(
            "form-action 'self'",
            &format!("form-action 'self' {source}"),
        ),
        None => own.to_owned(),
    }
}

/// A CSP source for the origin of `uri`: `scheme://host[:port]` for http(s), `scheme:` for a
/// native app's private-use scheme; `None` if it has characters a source cannot hold.
fn redirect_source(uri: &str) -> Option<String> {
    let (scheme, _) = uri.split_once(':')?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Some(format!("{scheme}:"));
    }
    let host = redirect_host(uri);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    host_ok.then(|| format!("{scheme}://{host}"))
}

/// Seconds between the page's reloads while it waits.
pub const RELOAD_SECS: u32 = 3;

/// `s` safe in HTML text and attribute values.
pub fn escape(s: &str) -> String {
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

/// The host a redirect URI sends the browser to (what the person should recognise).
fn redirect_host(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// The page of a request waiting for approval. `page` is the request's own URL on this server
/// (the forms' targets), `csrf` the page's token as hex.
pub fn waiting_page(w: &Waiting, page: &str, csrf: &str) -> String {
    let name = w.client_name.as_deref().unwrap_or(&w.client_id);
    let access = match w.scope {
        Role::Rw => "read and change files and run commands on this host",
        _ => "read files on this host",
    };
    let action = escape(page);
    let csrf = escape(csrf);
    let (reload, continues, login) = if w.pam {
        (
            String::new(),
            format!("<p>Approved on the host? <a href=\"{action}\">Continue</a>.</p>"),
            format!(
                "<h2>Or approve with your account</h2>\
{notice}\
<form method=\"post\" action=\"{action}/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<p><label>Account <input name=\"user\" autocomplete=\"username\" autocapitalize=\"none\" required maxlength=\"{user_max}\"></label></p>\
<p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required maxlength=\"{password_max}\"></label></p>\
<p><button type=\"submit\">Approve as this account</button></p></form>\
<p><small>The client will act as that account.</small></p>",
                notice = w
                    .notice
                    .as_deref()
                    .map(|n| format!("<p class=\"notice\" role=\"alert\"><strong>{}</strong></p>", escape(n)))
                    .unwrap_or_default(),
                user_max = mymcp_protocol::oauth::MAX_USER_LEN,
                password_max = mymcp_protocol::oauth::MAX_PASSWORD_LEN,
            ),
        )
    } else {
        (
            format!("<meta http-equiv=\"refresh\" content=\"{RELOAD_SECS}\">"),
            "<p>This page continues by itself once approved.</p>".to_owned(),
            String::new(),
        )
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
{reload}\
<title>Approve {name} — mymcp</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:34em;margin:2em auto;padding:0 1em;line-height:1.5}}\
code.approval{{font-size:2em;letter-spacing:.1em}}.notice{{color:#a00}}</style></head><body>\
<h1>{name} asks to connect</h1>\
<p>It would act on this host to <strong>{access}</strong>, and returns you to <strong>{host}</strong>.</p>\
<p>To approve, run on the host:</p>\
<p><code class=\"approval\">{code}</code></p>\
<pre>sudo mymcpctl oauth approve {code} --user ACCOUNT --role {role}</pre>\
{continues}<p>The code expires in {minutes} minutes.</p>\
{login}\
<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Deny</button></form>\
<p><small>Client: {client_id}</small></p></body></html>\n",
        name = escape(name),
        access = access,
        host = escape(redirect_host(&w.redirect_uri)),
        code = escape(&w.approval_code),
        role = if w.scope == Role::Rw { "rw" } else { "ro" },
        minutes = w.expires_in.div_ceil(60),
        client_id = escape(&w.client_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::oauth::Secret;

    fn waiting(name: &str) -> Waiting {
        Waiting {
            approval_code: "ABCD-EFGH".into(),
            client_id: "https://client.example/meta.json".into(),
            client_name: Some(name.into()),
            redirect_uri: "https://callback.example:8443/cb?x=1".into(),
            scope: Role::Rw,
            csrf: Secret([0; 32]),
            pam: false,
            expires_in: 600,
            notice: None,
        }
    }

    #[test]
    fn the_page_names_client_host_access_and_code_and_escapes_what_the_client_chose() {
        let page = waiting_page(
            &waiting("<script>alert(1)</script>\"'&"),
            "/consent/ab",
            "00ff",
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(page.contains("callback.example:8443"));
        assert!(page.contains("ABCD-EFGH"));
        assert!(page.contains("--role rw"));
        assert!(page.contains("run commands"));
        assert!(page.contains("name=\"csrf\" value=\"00ff\""));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(page.contains("10 minutes"));
        assert!(
            !page.contains("type=\"password\""),
            "no login form unless offered"
        );
    }

    #[test]
    fn with_pam_the_page_has_a_login_form_shows_the_notice_and_does_not_reload() {
        let mut w = waiting("Client");
        w.pam = true;
        let page = waiting_page(&w, "/consent/ab", "00ff");
        assert!(page.contains("action=\"/consent/ab/login\""), "{page}");
        assert!(
            page.contains("name=\"user\"") && page.contains("type=\"password\" name=\"password\"")
        );
        assert_eq!(
            page.matches("name=\"csrf\" value=\"00ff\"").count(),
            2,
            "both forms"
        );
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "typing is not thrown away"
        );
        assert!(page.contains("href=\"/consent/ab\""));
        assert!(!page.contains("class=\"notice\""));
        w.notice = Some("Wrong <account>".into());
        let page = waiting_page(&w, "/consent/ab", "00ff");
        assert!(page.contains("Wrong &lt;account&gt;"), "{page}");
    }

    #[test]
    fn the_headers_forbid_scripts_framing_and_caching() {
        let csp = HEADERS[0].1;
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("script-src"));
        assert!(HEADERS.contains(&("x-frame-options", "DENY")));
        assert!(HEADERS.contains(&("cache-control", "no-store")));
    }

    #[test]
    fn the_deny_form_may_lead_on_to_the_clients_origin_and_nowhere_else() {
        let csp = content_security_policy("https://claude.ai/api/mcp/auth_callback?x=1");
        assert!(
            csp.contains("form-action 'self' https://claude.ai;"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
        assert!(content_security_policy("http://127.0.0.1:6274/cb")
            .contains("'self' http://127.0.0.1:6274;"));
        assert!(
            content_security_policy("cursor://anysphere.cursor-mcp/oauth")
                .contains("'self' cursor:;")
        );
        // Nothing that could end the directive or add a source gets in.
        for odd in [
            "https://a.example;script-src *",
            "https://a b/",
            "1x://y",
            "https:///",
        ] {
            assert_eq!(content_security_policy(odd), HEADERS[0].1, "{odd}");
        }
    }
}
