//! Display text (names, class names, lesson titles) that reaches other
//! people's screens. Text that holds a bidirectional override or isolate, or
//! any other control character, can make a page read differently from what
//! it holds ("Trojan Source", CVE-2021-42574: a class named `7A` followed by
//! U+202E shows reversed), so it is refused with a typed error, never
//! silently cleaned.

/// Why display text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisplayTextError {
    /// It holds a bidirectional embedding, override, isolate or mark.
    #[error("holds a bidirectional control character (U+{0:04X})")]
    Bidi(u32),
    /// It holds another control character (C0, C1, DEL).
    #[error("holds a control character (U+{0:04X})")]
    Control(u32),
}

/// Whether `c` changes the direction of the text around it.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Checks `text` for bidirectional and other control characters.
pub fn check_display_text(text: &str) -> Result<(), DisplayTextError> {
    for c in text.chars() {
        if is_bidi_control(c) {
            return Err(DisplayTextError::Bidi(u32::from(c)));
        }
        if c.is_control() {
            return Err(DisplayTextError::Control(u32::from(c)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_in_any_script_passes() {
        for t in [
            "7A",
            "Année 7 — maths",
            "صف ٧",
            "שיעור",
            "Zoë O'Brien",
            "数学 🙂",
        ] {
            assert_eq!(check_display_text(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn every_bidi_control_and_control_character_is_refused() {
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            assert_eq!(
                check_display_text(&format!("7A{c}x")),
                Err(DisplayTextError::Bidi(u32::from(c)))
            );
        }
        for c in ['\0', '\n', '\t', '\u{7F}', '\u{85}', '\u{9F}'] {
            assert_eq!(
                check_display_text(&format!("a{c}")),
                Err(DisplayTextError::Control(u32::from(c)))
            );
        }
    }
}
