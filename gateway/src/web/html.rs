//! Server-rendered pages: escaping and the one page template. Scripts and
//! styles are files under `/static` (the Content-Security-Policy allows no
//! inline code).

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
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

/// A whole page. `kind` becomes `<body data-page="...">`, which the
/// browser tests read to know where they landed. `body` must already be
/// escaped HTML.
pub(crate) fn page(title: &str, kind: &str, body: &str) -> String {
    page_with_bar(title, kind, "", body)
}

/// A whole page whose header bar also holds `bar` (who is signed in, a
/// link or two; escaped HTML). Every page has a skip link to its main
/// content and one polite live region (`#announcer`), the only place the
/// pages announce changes from, so that nothing else is re-read.
pub(crate) fn page_with_bar(title: &str, kind: &str, bar: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Chaperone</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head>\
         <body data-page=\"{}\"><a class=\"skip\" href=\"#main\">Skip to main content</a>\
         <header class=\"bar\"><a href=\"/\" class=\"brand\">Chaperone</a>{bar}</header>\
         <main id=\"main\" tabindex=\"-1\">{body}</main>\
         <div id=\"announcer\" class=\"sr-only\" role=\"status\" aria-live=\"polite\"></div></body></html>",
        escape(title),
        escape(kind),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(page("<t>", "k\"", "b").contains("data-page=\"k&quot;\""));
    }
}
