//! The school's class lists, from a file its management information system
//! exports (`lesson.roster_file`): who is in each class, whether or not
//! they have ever signed in here. The register lists a rostered pupil who
//! never came as absent; without this file it knows only those who have
//! signed in at least once (the people directory).
//!
//! The file is CSV (RFC 4180: fields may be double-quoted, `""` inside a
//! quoted field is a quote), UTF-8, with the header `class,subject,name`:
//! the class as lessons name it, the pupil's subject at the school's
//! identity provider (`oidc.issuer`), and their display name. Read once at
//! start-up; a row that cannot be used stops the start with its line
//! number, never silently skipped (a register that quietly misses a pupil
//! is worse than none).

use std::collections::BTreeMap;

use chaperone_protocol::UserRef;
use chaperone_protocol::text::{DisplayTextError, check_display_text};

/// Why the roster file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The first line is not `class,subject,name`.
    #[error("line 1: the header must be class,subject,name")]
    Header,
    /// A line does not have exactly three fields (or a quote is not closed).
    #[error("line {0}: expected three fields: class,subject,name")]
    Fields(usize),
    /// A field is empty or too long.
    #[error("line {line}: the {field} is empty or longer than {max} characters")]
    Length {
        /// The line.
        line: usize,
        /// Which field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A class or name holds a character that changes how text reads.
    #[error("line {line}: the {field} {why}")]
    Text {
        /// The line.
        line: usize,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        why: DisplayTextError,
    },
    /// The subject does not make a valid person reference.
    #[error("line {line}: the subject cannot be used: {why}")]
    Subject {
        /// The line.
        line: usize,
        /// Why.
        why: String,
    },
    /// The same pupil is listed twice in one class.
    #[error("line {0}: this pupil is already listed in this class")]
    Duplicate(usize),
}

/// Longest class name.
const MAX_CLASS: usize = 64;
/// Longest display name.
const MAX_NAME: usize = 128;

/// The class lists: pupils (and their names) by class.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Roster {
    classes: BTreeMap<String, Vec<(UserRef, String)>>,
}

impl Roster {
    /// No class lists (no roster file configured).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads the roster file at `path`, subjects at `issuer`.
    pub fn load(path: &str, issuer: &str) -> Result<Self, RosterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RosterError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, issuer)
    }

    /// Parses a roster (see the module docs), subjects at `issuer`.
    pub fn parse(text: &str, issuer: &str) -> Result<Self, RosterError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, header))
                if fields(header).is_some_and(|f| {
                    f.iter().map(|s| s.trim()).eq(["class", "subject", "name"])
                }) => {}
            _ => return Err(RosterError::Header),
        }
        let mut roster = Self::default();
        for (line, row) in lines {
            if row.trim().is_empty() {
                continue;
            }
            let Some([class, subject, name]) =
                fields(row).and_then(|f| <[String; 3]>::try_from(f).ok())
            else {
                return Err(RosterError::Fields(line));
            };
            let (class, subject, name) = (class.trim(), subject.trim(), name.trim());
            for (field, value, max) in [("class", class, MAX_CLASS), ("name", name, MAX_NAME)] {
                if value.is_empty() || value.chars().count() > max {
                    return Err(RosterError::Length { line, field, max });
                }
                check_display_text(value).map_err(|why| RosterError::Text { line, field, why })?;
            }
            let user = UserRef::new(issuer, subject).map_err(|e| RosterError::Subject {
                line,
                why: e.to_string(),
            })?;
            let pupils = roster.classes.entry(class.to_owned()).or_default();
            if pupils.iter().any(|(u, _)| *u == user) {
                return Err(RosterError::Duplicate(line));
            }
            pupils.push((user, name.to_owned()));
        }
        Ok(roster)
    }

    /// The pupils of `class`, as listed.
    pub fn pupils(&self, class: &str) -> &[(UserRef, String)] {
        self.classes.get(class).map_or(&[], Vec::as_slice)
    }

    /// Every class the roster names.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }
}

/// The fields of one CSV line, or `None` if a quote is not closed (a field
/// may not span lines).
fn fields(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                out.push(std::mem::take(&mut field));
                at_start = true;
            }
            (_, c) => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    out.push(field);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://idp.school.example";

    #[test]
    fn class_lists_are_read_with_quoted_fields() {
        let r = Roster::parse(
            "\u{feff}class,subject,name\r\n7A,p-1,Ada\n7A,p-2,\"Lovelace, \"\"Bea\"\"\"\n\n7B,p-3,Cal\n",
            ISS,
        )
        .unwrap();
        let names: Vec<&str> = r.pupils("7A").iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["Ada", "Lovelace, \"Bea\""]);
        assert_eq!(r.pupils("7A")[0].0, UserRef::new(ISS, "p-1").unwrap());
        assert_eq!(r.pupils("7C"), &[]);
        assert_eq!(r.classes().collect::<Vec<_>>(), ["7A", "7B"]);
    }

    #[test]
    fn every_unusable_row_is_refused_with_its_line() {
        let bad =
            |rows: &str| Roster::parse(&format!("class,subject,name\n{rows}"), ISS).unwrap_err();
        assert!(matches!(
            Roster::parse("name,class\n", ISS),
            Err(RosterError::Header)
        ));
        assert!(matches!(Roster::parse("", ISS), Err(RosterError::Header)));
        assert!(matches!(bad("7A,p-1\n"), RosterError::Fields(2)));
        assert!(matches!(bad("7A,p-1,Ada,extra\n"), RosterError::Fields(2)));
        assert!(matches!(bad("7A,p-1,\"Ada\n"), RosterError::Fields(2)));
        assert!(matches!(
            bad("7A,p-1,Ada\n,p-2,Bea\n"),
            RosterError::Length {
                line: 3,
                field: "class",
                ..
            }
        ));
        assert!(matches!(
            bad("7A,p-1,  \n"),
            RosterError::Length {
                line: 2,
                field: "name",
                ..
            }
        ));
        assert!(matches!(
            bad("7A\u{202E},p-1,Ada\n"),
            RosterError::Text {
                line: 2,
                field: "class",
                why: DisplayTextError::Bidi(0x202E)
            }
        ));
        assert!(matches!(
            bad("7A,,Ada\n"),
            RosterError::Subject { line: 2, .. }
        ));
        assert!(matches!(
            bad("7A,p-1,Ada\n7A,p-1,Ada again\n"),
            RosterError::Duplicate(3)
        ));
        // The same pupil in two classes is two lists, not a duplicate.
        assert!(Roster::parse("class,subject,name\n7A,p-1,Ada\nChoir,p-1,Ada\n", ISS).is_ok());
    }
}
