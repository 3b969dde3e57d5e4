//! The HTML every page of the web view shares: escaping, times as people read them, the page
//! frame with its navigation, the login page, and the page for a server that cannot answer.

use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;

use super::page_response;
use crate::duration::rfc3339;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// "89d 23h", "5h 02m", "40s", or "expired 3d 2h ago".
pub fn time_left(not_after: OffsetDateTime, now: OffsetDateTime) -> String {
    let left = not_after - now;
    let span = |d: time::Duration| {
        let s = d.whole_seconds().abs();
        match s {
            s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
            s if s >= 3600 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
            s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
            s => format!("{s}s"),
        }
    };
    if left.is_negative() {
        format!("expired {} ago", span(left))
    } else {
        span(left)
    }
}

/// A time in a table cell: to the minute, one line; the exact time on hover.
pub(super) fn when(t: OffsetDateTime) -> String {
    let full = rfc3339(t);
    let short = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    );
    format!(
        "<time datetime=\"{}\" title=\"{}\">{short}</time>",
        esc(&full),
        esc(&full)
    )
}

/// The frame of every page: title, navigation, and an optional refresh for pages that follow
/// something as it happens.
pub(super) fn layout(
    title: &str,
    current: &str,
    refresh_seconds: Option<u32>,
    body: &str,
) -> String {
    let refresh = refresh_seconds
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let nav: String = [
        ("fleet", "Fleet"),
        ("ca", "CA"),
        ("rotation", "Rotation"),
        ("audit", "Audit"),
    ]
    .iter()
    .map(|(path, label)| {
        let class = if *path == current {
            " class=\"current\""
        } else {
            ""
        };
        format!("<a href=\"/ui/{path}\"{class}>{label}</a>")
    })
    .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · etcd-ca</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body><header><span class=\"brand\">etcd-ca</span><nav>{nav}</nav>\
<form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Log out</button></form></header>\
<main><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title)
    )
}

/// The login page (the only page shown without credentials).
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Log in · etcd-ca</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body class=\"login\"><main><h1>etcd-ca</h1>{error}\
<form method=\"post\" action=\"/ui/login\" id=\"login\">\
<label for=\"token\">Admin token</label>\
<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" autofocus>\
<button type=\"submit\">Log in</button></form>\
<p class=\"hint\">Create one on the CA host with <code>etcd-ca admin-token create</code>, \
or open this page with an admin client certificate.</p></main></body></html>\n"
    )
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    page_response(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Unavailable",
            "",
            Some(10),
            &format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
        ),
    )
}

/// The first 16 hex digits of a serial, enough to tell certificates apart at a glance.
pub(super) fn short(serial: &str) -> String {
    serial.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn time_left_reads_like_a_person_would() {
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(time_left(t + time::Duration::hours(49), t), "2d 1h");
        assert_eq!(time_left(t + time::Duration::minutes(125), t), "2h 05m");
        assert_eq!(
            time_left(t - time::Duration::days(3), t),
            "expired 3d 0h ago"
        );
    }
}
