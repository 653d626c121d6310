//! A small, safe Markdown renderer for bulletin summaries: paragraphs,
//! headings, lists, quotes, code spans and blocks, bold and italic. Every
//! character of the source is HTML-escaped first; raw HTML is shown as
//! text, and links are shown as their text and address in plain text, never
//! as a link or an image, so a summary cannot run script or make the
//! browser fetch anything.

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
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

/// Renders `source` as HTML.
pub(crate) fn render(source: &str) -> String {
    let mut out = String::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut list: Option<(&'static str, Vec<String>)> = None;
    let mut code: Option<Vec<&str>> = None;
    for line in source.lines() {
        if let Some(lines) = code.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push_str("<pre><code>");
                out.push_str(&escape(&lines.join("\n")));
                out.push_str("</code></pre>\n");
                code = None;
            } else {
                lines.push(line);
            }
            continue;
        }
        let trimmed = line.trim();
        let item = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
            .map(|text| ("ul", text))
            .or_else(|| numbered(trimmed).map(|text| ("ol", text)));
        if item.is_none() || trimmed.is_empty() || trimmed.starts_with("```") {
            flush_list(&mut out, &mut list);
        }
        if trimmed.is_empty() {
            flush_paragraph(&mut out, &mut paragraph);
        } else if trimmed.starts_with("```") {
            flush_paragraph(&mut out, &mut paragraph);
            code = Some(Vec::new());
        } else if let Some((tag, text)) = item {
            flush_paragraph(&mut out, &mut paragraph);
            match list.as_mut() {
                Some((open, items)) if *open == tag => items.push(inline(text)),
                _ => {
                    flush_list(&mut out, &mut list);
                    list = Some((tag, vec![inline(text)]));
                }
            }
        } else if let Some((level, text)) = heading(trimmed) {
            flush_paragraph(&mut out, &mut paragraph);
            // Page headings are h1 and h2; a summary's start at h3.
            let level = (level + 2).min(6);
            out.push_str(&format!("<h{level}>{}</h{level}>\n", inline(text)));
        } else if let Some(text) = trimmed.strip_prefix('>') {
            flush_paragraph(&mut out, &mut paragraph);
            out.push_str(&format!(
                "<blockquote>{}</blockquote>\n",
                inline(text.trim())
            ));
        } else {
            paragraph.push(trimmed);
        }
    }
    if let Some(lines) = code {
        out.push_str("<pre><code>");
        out.push_str(&escape(&lines.join("\n")));
        out.push_str("</code></pre>\n");
    }
    flush_list(&mut out, &mut list);
    flush_paragraph(&mut out, &mut paragraph);
    out
}

fn numbered(line: &str) -> Option<&str> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    line.get(digits..)?.strip_prefix(". ")
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    line.get(level..)?
        .strip_prefix(' ')
        .map(|text| (level, text))
}

fn flush_paragraph(out: &mut String, paragraph: &mut Vec<&str>) {
    if paragraph.is_empty() {
        return;
    }
    out.push_str("<p>");
    out.push_str(&inline(&paragraph.join(" ")));
    out.push_str("</p>\n");
    paragraph.clear();
}

fn flush_list(out: &mut String, list: &mut Option<(&'static str, Vec<String>)>) {
    if let Some((tag, items)) = list.take() {
        out.push_str(&format!("<{tag}>"));
        for item in items {
            out.push_str(&format!("<li>{item}</li>"));
        }
        out.push_str(&format!("</{tag}>\n"));
    }
}

/// Inline markup of one escaped line: `code`, **bold**, *italic* or
/// _italic_, and `[text](address)` shown as "text (address)".
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`')
            && let Some(end) = after.find('`')
        {
            out.push_str(&format!("<code>{}</code>", escape(&after[..end])));
            rest = &after[end + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("**")
            && let Some(end) = after.find("**")
            && end > 0
        {
            out.push_str(&format!("<strong>{}</strong>", inline(&after[..end])));
            rest = &after[end + 2..];
            continue;
        }
        if let Some(marker) = rest.chars().next().filter(|c| *c == '*' || *c == '_')
            && let Some(after) = rest.get(1..)
            && let Some(end) = after.find(marker)
            && end > 0
        {
            out.push_str(&format!("<em>{}</em>", inline(&after[..end])));
            rest = &after[end + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('[')
            && let Some(close) = after.find("](")
            && let Some(end) = after[close + 2..].find(')')
        {
            let label = &after[..close];
            let address = &after[close + 2..close + 2 + end];
            out.push_str(&format!(
                "{} (<code>{}</code>)",
                inline(label),
                escape(address)
            ));
            rest = &after[close + 3 + end..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_renders() {
        let html =
            render("# Title\n\nSome **bold** and *it* and `x<y`.\n\n- one\n- two\n\n1. a\n2. b");
        assert!(html.contains("<h3>Title</h3>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains("<em>it</em>"), "{html}");
        assert!(html.contains("<code>x&lt;y</code>"), "{html}");
        assert!(html.contains("<ul><li>one</li><li>two</li></ul>"), "{html}");
        assert!(html.contains("<ol><li>a</li><li>b</li></ol>"), "{html}");
    }

    #[test]
    fn html_and_links_stay_text() {
        let html = render(
            "<script>alert(1)</script> <img src=x onerror=alert(1)>\n\n[click](javascript:alert(1)) ![i](https://evil.example/x.png)\n\n```\n<b>\n```",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<a"), "{html}");
        assert!(!html.contains("src=\""), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;"), "{html}");
        assert!(
            html.contains("click (<code>javascript:alert(1</code>)"),
            "{html}"
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in [
            "*", "**", "`", "[", "[a](", "[a](b", "#", "1.", "```", "_a", "é*é*", "**é",
        ] {
            let _ = render(text);
        }
    }
}
