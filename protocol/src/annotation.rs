//! Annotation over a screen share: the shape of a mark (a stroke, a shape,
//! a text label or a laser flash) and the limits every mark must keep.
//!
//! Coordinates are fixed-point fractions of the shared picture: `0` is the
//! left (top) edge of the screen-share frame and [`COORD_SCALE`] the right
//! (bottom) edge, so a mark stays on the content at any window size and any
//! capture resolution. Integers rather than floats keep every message
//! comparable (`Eq`) and every replay exact.
//!
//! This module owns the shape and the limits ([`Stroke::check`]); who may
//! draw, on which share and how often is the lesson core's to decide. It
//! must never accept a mark that is larger than the bounds below: they are
//! what keeps one misbehaving client from filling every other page's
//! memory.

use serde::{Deserialize, Serialize};

/// One coordinate unit is 1/`COORD_SCALE` of the shared picture's width
/// (x) or height (y).
pub const COORD_SCALE: u16 = 10_000;

/// Most points in one mark, its extensions included.
pub const MAX_POINTS: usize = 2_000;

/// Most marks one shared screen's layer holds (undone marks kept for redo
/// count too).
pub const MAX_MARKS_PER_LAYER: usize = 500;

/// Widest line (or largest text size), in coordinate units of the width.
pub const MAX_WIDTH: u16 = 500;

/// Longest text label, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// A mark's id, unique in a lesson, handed out by the server.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MarkId(pub u64);

/// Who drew a mark, as pupils see it: an opaque number handed out per
/// person per lesson (the same for a pupil's every connection), that says
/// nothing about who they are. Staff are also told the name.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AuthorHandle(pub u32);

/// The drawing tools.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// Freehand line.
    Pen,
    /// Freehand, wide and translucent.
    Highlighter,
    /// A straight line from the first point to the second.
    Line,
    /// A line with an arrow head at the second point.
    Arrow,
    /// A rectangle with the two points at opposite corners.
    Rectangle,
    /// An ellipse inside the rectangle of the two points.
    Ellipse,
    /// A text label whose top-left corner is the one point.
    Text,
    /// A pointer flash that fades by itself: shown, recorded, never kept
    /// in the layer (so neither undone nor cleared).
    Laser,
}

impl Tool {
    /// Every tool, in a fixed order.
    pub const ALL: [Tool; 8] = [
        Tool::Pen,
        Tool::Highlighter,
        Tool::Line,
        Tool::Arrow,
        Tool::Rectangle,
        Tool::Ellipse,
        Tool::Text,
        Tool::Laser,
    ];

    /// Freehand tools take any number of points and may be extended.
    pub const fn freehand(self) -> bool {
        matches!(self, Tool::Pen | Tool::Highlighter)
    }

    /// How many points a mark of this tool has: `(least, most)`.
    pub const fn points(self) -> (usize, usize) {
        match self {
            Tool::Pen | Tool::Highlighter | Tool::Laser => (1, MAX_POINTS),
            Tool::Line | Tool::Arrow | Tool::Rectangle | Tool::Ellipse => (2, 2),
            Tool::Text => (1, 1),
        }
    }
}

/// A colour, `#rrggbb` on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Colour(pub u32);

impl Colour {
    /// The colour's red, green and blue bytes.
    pub const fn rgb(self) -> (u8, u8, u8) {
        ((self.0 >> 16) as u8, (self.0 >> 8) as u8, self.0 as u8)
    }
}

impl TryFrom<String> for Colour {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let hex = s
            .strip_prefix('#')
            .filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("colour {s:?} is not #rrggbb"))?;
        u32::from_str_radix(hex, 16)
            .map(Colour)
            .map_err(|e| e.to_string())
    }
}

impl From<Colour> for String {
    fn from(c: Colour) -> Self {
        format!("#{:06x}", c.0 & 0x00ff_ffff)
    }
}

/// A point of the shared picture, `[x, y]` in coordinate units.
pub type Point = [u16; 2];

/// One mark as drawn: the tool, its look and its points.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stroke {
    /// The tool.
    pub tool: Tool,
    /// The colour.
    pub colour: Colour,
    /// Line width (text: its size), in coordinate units of the width.
    pub width: u16,
    /// The points, in coordinate units (see [`Tool::points`]).
    pub points: Vec<Point>,
    /// The label of a text mark (and only of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Why a mark was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrokeError {
    /// The number of points does not fit the tool (or exceeds [`MAX_POINTS`]).
    #[error("wrong number of points for the tool")]
    Points,
    /// A coordinate is outside the shared picture.
    #[error("a point lies outside the shared picture")]
    OutOfFrame,
    /// The width is zero or larger than [`MAX_WIDTH`].
    #[error("width out of range")]
    Width,
    /// A text mark without a label, a label that is empty, too long or
    /// holds control characters, or a label on another tool.
    #[error("bad label")]
    Label,
}

/// Checks that every point lies in the shared picture.
pub fn check_points(points: &[Point]) -> Result<(), StrokeError> {
    if points
        .iter()
        .any(|[x, y]| *x > COORD_SCALE || *y > COORD_SCALE)
    {
        return Err(StrokeError::OutOfFrame);
    }
    Ok(())
}

impl Stroke {
    /// Checks the mark against its tool and the bounds of this module.
    pub fn check(&self) -> Result<(), StrokeError> {
        let (least, most) = self.tool.points();
        if self.points.len() < least || self.points.len() > most {
            return Err(StrokeError::Points);
        }
        check_points(&self.points)?;
        if self.width == 0 || self.width > MAX_WIDTH {
            return Err(StrokeError::Width);
        }
        match (&self.text, self.tool) {
            (Some(t), Tool::Text) => {
                let n = t.trim().chars().count();
                if n == 0 || n > MAX_LABEL_CHARS || crate::text::check_display_text(t).is_err() {
                    return Err(StrokeError::Label);
                }
            }
            (None, Tool::Text) | (Some(_), _) => return Err(StrokeError::Label),
            (None, _) => {}
        }
        Ok(())
    }
}

/// A mark as a participant receives it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    /// The mark's id.
    pub id: MarkId,
    /// Whose shared screen it is drawn on.
    pub layer: crate::ParticipantId,
    /// Who drew it, opaquely.
    pub author: AuthorHandle,
    /// Drawn by a teacher or assistant.
    pub staff: bool,
    /// Drawn by the participant receiving it.
    pub mine: bool,
    /// The author's name: sent to staff and observers, and to pupils only
    /// for marks by staff (never another pupil's name to a pupil).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What was drawn.
    pub stroke: Stroke,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stroke(tool: Tool, points: Vec<Point>) -> Stroke {
        Stroke {
            tool,
            colour: Colour(0xff0000),
            width: 20,
            points,
            text: (tool == Tool::Text).then(|| "x = 2".to_owned()),
        }
    }

    #[test]
    fn colours_are_rrggbb() {
        assert_eq!(String::from(Colour(0x12ab0f)), "#12ab0f");
        assert_eq!(Colour::try_from("#12AB0F".to_owned()), Ok(Colour(0x12ab0f)));
        for bad in ["12ab0f", "#12ab0", "#12ab0fa", "#12ag0f", "", "#+12ab0"] {
            assert!(Colour::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_tool_takes_its_number_of_points() {
        for tool in Tool::ALL {
            let (least, most) = tool.points();
            assert_eq!(
                stroke(tool, vec![[1, 1]; least]).check(),
                Ok(()),
                "{tool:?}"
            );
            assert_eq!(
                stroke(tool, vec![[1, 1]; most + 1]).check(),
                Err(StrokeError::Points),
                "{tool:?}"
            );
            assert_eq!(
                stroke(tool, vec![]).check(),
                Err(StrokeError::Points),
                "{tool:?}"
            );
        }
    }

    #[test]
    fn out_of_frame_widths_and_labels_are_refused() {
        let mut s = stroke(Tool::Pen, vec![[0, 0], [COORD_SCALE, COORD_SCALE]]);
        assert_eq!(s.check(), Ok(()));
        s.points.push([COORD_SCALE + 1, 0]);
        assert_eq!(s.check(), Err(StrokeError::OutOfFrame));
        let mut s = stroke(Tool::Line, vec![[0, 0], [5, 5]]);
        s.width = 0;
        assert_eq!(s.check(), Err(StrokeError::Width));
        s.width = MAX_WIDTH + 1;
        assert_eq!(s.check(), Err(StrokeError::Width));
        s.width = MAX_WIDTH;
        s.text = Some("label on a line".into());
        assert_eq!(s.check(), Err(StrokeError::Label));
        let mut t = stroke(Tool::Text, vec![[3, 3]]);
        for bad in [
            None,
            Some("  ".to_owned()),
            Some("a\u{202E}b".to_owned()),
            Some("x".repeat(MAX_LABEL_CHARS + 1)),
        ] {
            t.text = bad.clone();
            assert_eq!(t.check(), Err(StrokeError::Label), "{bad:?}");
        }
    }
}
