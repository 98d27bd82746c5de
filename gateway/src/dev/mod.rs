//! Development mode (`gateway --dev`), compiled only with the cargo feature
//! `dev`: the built-in identity provider ([`idp`]), the review service
//! in-process ([`review`]) and the development review identity the
//! embedded recorder seals to.
//!
//! A gateway built without the feature (the Dockerfile's) has none of this:
//! it links no review code and no age identity code, and `--dev` is refused
//! at start-up. Nothing here may be reached outside `--dev`: each entry
//! point checks the configuration's `dev` flag as well.

use std::path::Path;

pub mod idp;
pub(crate) mod review;

/// The public recipient of the development review identity kept in
/// `dir/review-identity.txt`, making the identity first if there is none,
/// so development recordings stay openable across restarts.
pub(crate) fn review_recipient(dir: &Path) -> Result<String, String> {
    let path = dir.join("review-identity.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (identity, recipient) = chaperone_review::open::generate_identity();
            let text = format!("# development review identity for {recipient}\n{identity}\n");
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            text
        }
    };
    chaperone_review::open::recipient_of(&text)
        .ok_or_else(|| format!("{} holds no age identity", path.display()))
}
