//! Sealing: segments open with the review identity (and an escrow identity),
//! with this crate, with the `age` crate directly and with the `age` CLI;
//! never with anyone else's; and the ingest side holds public keys only.

use std::io::Read as _;

use age::secrecy::ExposeSecret as _;
use chaperone_archive::segment::{RecipientSet, SealError, seal};
use chaperone_review::open::{OpenError, open_segment};
use chaperone_testkit::archive::*;

fn age_decrypt(sealed: &[u8], id: &age::x25519::Identity) -> Result<Vec<u8>, age::DecryptError> {
    let d = age::Decryptor::new_buffered(sealed)?;
    let mut r = d.decrypt(std::iter::once(id as &dyn age::Identity))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn opens_with_the_identity_and_not_another() {
    let review = age::x25519::Identity::generate();
    let stranger = age::x25519::Identity::generate();
    let s = segment(lesson_id(), 0, 0);
    let sealed = seal(&s, &RecipientSet::new(vec![review.to_public()]).unwrap()).unwrap();
    // Not plaintext: the frames do not appear in the sealed bytes.
    assert!(!sealed.windows(5).any(|w| w == b"frame"));
    assert_eq!(age_decrypt(&sealed, &review).unwrap(), s.encode());
    assert!(matches!(
        age_decrypt(&sealed, &stranger).unwrap_err(),
        age::DecryptError::NoMatchingKeys
    ));
    assert_eq!(open_segment(&sealed, &review).unwrap(), s);
    assert!(matches!(
        open_segment(&sealed, &stranger).unwrap_err(),
        OpenError::NotARecipient
    ));
}

#[test]
fn either_of_two_recipients_opens_it() {
    let review = age::x25519::Identity::generate();
    let escrow = age::x25519::Identity::generate();
    let s = segment(lesson_id(), 4, 40);
    let set = RecipientSet::new(vec![review.to_public(), escrow.to_public()]).unwrap();
    let sealed = seal(&s, &set).unwrap();
    assert_eq!(age_decrypt(&sealed, &review).unwrap(), s.encode());
    assert_eq!(age_decrypt(&sealed, &escrow).unwrap(), s.encode());
    assert!(age_decrypt(&sealed, &age::x25519::Identity::generate()).is_err());
}

#[test]
fn tampered_ciphertext_does_not_open() {
    let review = age::x25519::Identity::generate();
    let s = segment(lesson_id(), 0, 0);
    let mut sealed = seal(&s, &RecipientSet::new(vec![review.to_public()]).unwrap()).unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert!(open_segment(&sealed, &review).is_err());
    assert!(open_segment(b"not an age file", &review).is_err());
}

/// Shells out to the standard `age` tool: any recording opens with it.
#[test]
fn the_age_cli_opens_a_segment() {
    let age_bin = ["/usr/bin/age", "/usr/local/bin/age"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "the `age` command-line tool is required for this test but was not found; \
                 install it (Debian: `apt-get install age`)"
            )
        });
    let dir = tempfile::tempdir().unwrap();
    let review = age::x25519::Identity::generate();
    let escrow = age::x25519::Identity::generate();
    let s = segment(lesson_id(), 7, 70);
    let sealed = seal(
        &s,
        &RecipientSet::new(vec![review.to_public(), escrow.to_public()]).unwrap(),
    )
    .unwrap();
    let seg = dir.path().join("segment.age");
    std::fs::write(&seg, &sealed).unwrap();
    for (name, id) in [("review.txt", &review), ("escrow.txt", &escrow)] {
        let id_file = dir.path().join(name);
        std::fs::write(&id_file, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let out = std::process::Command::new(age_bin)
            .arg("-d")
            .arg("-i")
            .arg(&id_file)
            .arg(&seg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, s.encode(), "plaintext from `age -d -i {name}`");
    }
    // And a stranger's identity is refused by the tool too.
    let stranger = dir.path().join("stranger.txt");
    let sid = age::x25519::Identity::generate();
    std::fs::write(&stranger, format!("{}\n", sid.to_string().expose_secret())).unwrap();
    let out = std::process::Command::new(age_bin)
        .args(["-d", "-i"])
        .arg(&stranger)
        .arg(&seg)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The ingest side takes public recipients only: a secret key offered in a
/// recipients file is refused with a typed error, and the ingest modules'
/// code never names an identity or a decryptor.
#[test]
fn ingest_side_holds_only_recipients() {
    let id = age::x25519::Identity::generate();
    let text = format!(
        "# review key\n{}\n{}\n",
        id.to_public(),
        id.to_string().expose_secret()
    );
    assert!(matches!(
        RecipientSet::parse(&text).unwrap_err(),
        SealError::SecretKeyGiven { line: 3 }
    ));
    assert!(matches!(
        RecipientSet::new(vec![]).unwrap_err(),
        SealError::NoRecipients
    ));
    // What the writer holds is a list of `age::x25519::Recipient`s.
    let set = RecipientSet::parse(&format!("{}\n", id.to_public())).unwrap();
    let held: &[age::x25519::Recipient] = set.recipients();
    assert_eq!(held.len(), 1);

    // Source-level guard: no non-test code of this crate names an age
    // identity or decryptor (opening is chaperone-review's alone).
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let file = file.display();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for banned in ["Identity", "Decryptor", "decrypt("] {
            assert!(
                !code.contains(banned),
                "{file} names `{banned}`: the ingest side must hold public recipients only"
            );
        }
    }
}
