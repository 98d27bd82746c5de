//! Reading what receivers need from SRTP packets *without decrypting them*:
//! SRTP encrypts only the payload, so the RTP header and its header
//! extensions (SSRC, sequence number, mid, the origin timestamp) are in the
//! clear. Also the few SDP lines the generator needs (extension ids, mids,
//! msids, SSRCs).
//!
//! Pure functions over bytes and text; no I/O, no clock.

use std::time::Duration;

/// abs-capture-time (NTP capture time on a frame's first packet).
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
/// abs-send-time (24-bit 6.18 fixed-point seconds, wraps every 64 s).
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// The RTP mid header extension.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// What kind of datagram arrived on a WebRTC socket (RFC 7983 demux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// STUN (first byte 0..=3).
    Stun,
    /// DTLS (first byte 20..=63).
    Dtls,
    /// SRTP (version 2, payload type outside the RTCP range).
    Rtp,
    /// SRTCP (version 2, packet type 192..=223).
    Rtcp,
    /// Anything else.
    Other,
}

/// Classifies a datagram by its first two bytes.
pub fn classify(d: &[u8]) -> Datagram {
    match (d.first(), d.get(1)) {
        (Some(0..=3), _) => Datagram::Stun,
        (Some(20..=63), _) => Datagram::Dtls,
        (Some(128..=191), Some(b)) if (192..=223).contains(b) => Datagram::Rtcp,
        (Some(128..=191), Some(_)) if d.len() >= 12 => Datagram::Rtp,
        _ => Datagram::Other,
    }
}

/// Header extension ids a receiver looks for (from the SDP it negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtIds {
    /// abs-capture-time.
    pub capture_time: Option<u8>,
    /// abs-send-time.
    pub send_time: Option<u8>,
    /// mid.
    pub mid: Option<u8>,
    /// Payload types that are retransmissions (`rtx`), up to 8.
    pub rtx: [Option<u8>; 8],
}

impl ExtIds {
    /// Whether `pt` is a retransmission payload type.
    pub fn is_rtx(&self, pt: u8) -> bool {
        self.rtx.contains(&Some(pt))
    }

    fn add_rtx(&mut self, pt: u8) {
        if !self.is_rtx(pt)
            && let Some(slot) = self.rtx.iter_mut().find(|s| s.is_none())
        {
            *slot = Some(pt);
        }
    }
}

/// The clear parts of one RTP header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtpInfo {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// Payload type.
    pub pt: u8,
    /// RTP timestamp (one per frame).
    pub ts: u32,
    /// abs-capture-time as Unix nanoseconds.
    pub capture_ns: Option<u64>,
    /// abs-send-time: seconds modulo 64 in 6.18 fixed point (raw 24 bits).
    pub send_time_raw: Option<u32>,
    /// The mid extension's value.
    pub mid: Option<String>,
}

/// Parses the RTP header and the extensions named in `ids`. `None` for
/// anything that is not a well-formed RTP header.
pub fn parse_rtp(d: &[u8], ids: ExtIds) -> Option<RtpInfo> {
    let b0 = *d.first()?;
    if b0 >> 6 != 2 {
        return None;
    }
    let csrcs = usize::from(b0 & 0x0f);
    let has_ext = b0 & 0x10 != 0;
    let pt = d.get(1)? & 0x7f;
    let seq = u16::from_be_bytes([*d.get(2)?, *d.get(3)?]);
    let ts = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
    let ssrc = u32::from_be_bytes(d.get(8..12)?.try_into().ok()?);
    let mut info = RtpInfo {
        ssrc,
        seq,
        pt,
        ts,
        ..RtpInfo::default()
    };
    if !has_ext {
        return Some(info);
    }
    let at = 12 + 4 * csrcs;
    let profile = u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]);
    let words = usize::from(u16::from_be_bytes([*d.get(at + 2)?, *d.get(at + 3)?]));
    let ext = d.get(at + 4..at + 4 + 4 * words)?;
    let mut i = 0;
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xbede && !two_byte {
        return Some(info);
    }
    while i < ext.len() {
        let (id, len, start) = if two_byte {
            let id = ext[i];
            if id == 0 {
                i += 1;
                continue;
            }
            (id, usize::from(*ext.get(i + 1)?), i + 2)
        } else {
            let b = ext[i];
            if b == 0 {
                i += 1;
                continue;
            }
            let id = b >> 4;
            if id == 15 {
                break;
            }
            (id, usize::from(b & 0x0f) + 1, i + 1)
        };
        let value = ext.get(start..start + len)?;
        if Some(id) == ids.capture_time && value.len() >= 8 {
            let ntp = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
            info.capture_ns = ntp_to_unix_ns(ntp);
        } else if Some(id) == ids.send_time && value.len() == 3 {
            info.send_time_raw = Some(u32::from_be_bytes([0, value[0], value[1], value[2]]));
        } else if Some(id) == ids.mid {
            info.mid = std::str::from_utf8(value).ok().map(str::to_owned);
        }
        i = start + len;
    }
    Some(info)
}

/// A 64-bit NTP timestamp (Q32.32 since 1900) as Unix nanoseconds.
pub fn ntp_to_unix_ns(ntp: u64) -> Option<u64> {
    let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
    let frac = ntp & 0xffff_ffff;
    let nanos = (frac * 1_000_000_000) >> 32;
    Some(secs * 1_000_000_000 + nanos)
}

/// The Unix time (ns) an abs-send-time value means, taking the 64 s period
/// that puts it closest before `rx_ns` (the arrival time): a packet is never
/// in flight for anything near 32 s.
pub fn abs_send_time_ns(raw: u32, rx_ns: u64) -> u64 {
    const PERIOD_NS: u64 = 64_000_000_000;
    // 6.18 fixed point: 2^18 units per second.
    let in_period = (u64::from(raw) * 1_000_000_000) >> 18;
    let base = rx_ns - rx_ns % PERIOD_NS;
    let mut t = base + in_period;
    if t > rx_ns + PERIOD_NS / 2 {
        t -= PERIOD_NS;
    } else if t + PERIOD_NS / 2 < rx_ns {
        t += PERIOD_NS;
    }
    t
}

/// One m-section of an SDP, as far as the generator cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MSection {
    /// `audio` or `video`.
    pub kind: String,
    /// `a=mid`.
    pub mid: String,
    /// The track part of `a=msid:<stream> <track>`.
    pub msid_track: Option<String>,
    /// `a=ssrc:` values.
    pub ssrcs: Vec<u32>,
    /// `a=sendonly` / `a=recvonly` / `a=sendrecv` / `a=inactive`.
    pub direction: String,
}

/// Extension ids and m-sections of an SDP.
pub fn parse_sdp(sdp: &str) -> (ExtIds, Vec<MSection>) {
    let mut ids = ExtIds::default();
    let mut sections: Vec<MSection> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            sections.push(MSection {
                kind: rest.split(' ').next().unwrap_or_default().to_owned(),
                direction: "sendrecv".to_owned(),
                ..MSection::default()
            });
        } else if let Some(rest) = line.strip_prefix("a=extmap:") {
            let mut parts = rest.split_whitespace();
            let id = parts
                .next()
                .and_then(|i| i.split('/').next())
                .and_then(|i| i.parse::<u8>().ok());
            match (id, parts.next()) {
                (Some(id), Some(ABS_CAPTURE_TIME_URI)) => ids.capture_time = Some(id),
                (Some(id), Some(ABS_SEND_TIME_URI)) => ids.send_time = Some(id),
                (Some(id), Some(MID_URI)) => ids.mid = Some(id),
                _ => {}
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:")
            && let Some((pt, enc)) = rest.split_once(' ')
            && enc.starts_with("rtx/")
            && let Ok(pt) = pt.parse::<u8>()
        {
            ids.add_rtx(pt);
        } else if let Some(section) = sections.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                section.mid = mid.to_owned();
            } else if let Some(msid) = line.strip_prefix("a=msid:") {
                section.msid_track = msid.split_whitespace().nth(1).map(str::to_owned);
            } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
                let mut parts = ssrc.split_whitespace();
                if let Some(Ok(s)) = parts.next().map(str::parse::<u32>) {
                    if !section.ssrcs.contains(&s) {
                        section.ssrcs.push(s);
                    }
                    if let Some(msid) = parts.next().and_then(|p| p.strip_prefix("msid:")) {
                        let track = parts.next().map(str::to_owned);
                        if section.msid_track.is_none() && !msid.is_empty() {
                            section.msid_track = track;
                        }
                    }
                }
            } else if let Some(d) = ["sendonly", "recvonly", "sendrecv", "inactive"]
                .iter()
                .find(|d| line == format!("a={d}"))
            {
                section.direction = (*d).to_owned();
            }
        }
    }
    (ids, sections)
}

/// A duration in whole microseconds (saturating), for samples.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn demux_by_first_byte() {
        assert_eq!(classify(&[0, 1, 0, 0]), Datagram::Stun);
        assert_eq!(classify(&[22, 254, 253]), Datagram::Dtls);
        assert_eq!(classify(&[0x80, 200, 0, 6]), Datagram::Rtcp);
        assert_eq!(
            classify(&[0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Datagram::Rtp
        );
        assert_eq!(classify(&[]), Datagram::Other);
    }

    #[test]
    fn one_byte_extensions_are_read() {
        // V=2, X=1; PT 111; seq 7; ts 0; ssrc 0x01020304.
        let mut p = vec![0x90, 111, 0, 7, 0, 0, 0, 0, 1, 2, 3, 4];
        // 0xBEDE, 5 words: mid "a1" (id 4), abs-send-time (id 2), capture (id 7, 8 bytes).
        p.extend_from_slice(&[0xbe, 0xde, 0, 5]);
        p.extend_from_slice(&[0x41, b'a', b'1']);
        p.extend_from_slice(&[0x22, 0x04, 0x00, 0x00]); // 1.0 s
        let unix_ns = 1_700_000_000_250_000_000u64;
        let secs = unix_ns / 1_000_000_000 + NTP_UNIX_OFFSET_SECS;
        let frac = ((unix_ns % 1_000_000_000) << 32) / 1_000_000_000;
        p.push(0x77);
        p.extend_from_slice(&((secs << 32) | frac).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0]); // padding to 20 bytes
        p.extend_from_slice(&[0xaa; 10]);
        let ids = ExtIds {
            capture_time: Some(7),
            send_time: Some(2),
            mid: Some(4),
            ..ExtIds::default()
        };
        let info = parse_rtp(&p, ids).unwrap();
        assert_eq!(info.ssrc, 0x01020304);
        assert_eq!(info.seq, 7);
        assert_eq!(info.mid.as_deref(), Some("a1"));
        assert_eq!(info.send_time_raw, Some(1 << 18));
        let got = info.capture_ns.unwrap();
        assert!(got.abs_diff(unix_ns) < 2, "{got} vs {unix_ns}");
    }

    #[test]
    fn truncated_headers_are_refused() {
        assert_eq!(parse_rtp(&[0x90, 111, 0, 7], ExtIds::default()), None);
        let mut p = vec![0x90, 111, 0, 7, 0, 0, 0, 0, 1, 2, 3, 4, 0xbe, 0xde, 0, 9];
        p.extend_from_slice(&[0x11, 0]);
        assert_eq!(parse_rtp(&p, ExtIds::default()), None);
    }

    #[test]
    fn abs_send_time_unwraps_near_arrival() {
        // 1.5 s into a 64 s period, arriving 1 ms later.
        let period = 64_000_000_000u64;
        let sent = 100 * period + 1_500_000_000;
        let raw = (((1_500_000_000u64) << 18) / 1_000_000_000) as u32;
        let t = abs_send_time_ns(raw, sent + 1_000_000);
        assert!(t.abs_diff(sent) < 10_000, "{t} vs {sent}");
        // Sent just before a wrap, received just after.
        let sent = 101 * period - 1_000_000;
        let raw = ((((period - 1_000_000) % period) << 18) / 1_000_000_000) as u32;
        let t = abs_send_time_ns(raw, sent + 2_000_000);
        assert!(t.abs_diff(sent) < 10_000, "{t} vs {sent}");
    }

    #[test]
    fn sdp_sections_and_ids() {
        let sdp = "v=0\r\na=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:p3 p3/microphone\r\na=rtpmap:97 rtx/90000\r\na=ssrc:1234 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:1\r\na=ssrc:99 msid:p4 p4/camera\r\n";
        let (ids, s) = parse_sdp(sdp);
        assert_eq!(ids.capture_time, Some(7));
        assert_eq!(ids.mid, Some(4));
        assert!(ids.is_rtx(97) && !ids.is_rtx(96));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].msid_track.as_deref(), Some("p3/microphone"));
        assert_eq!(s[0].ssrcs, vec![1234]);
        assert_eq!(s[0].direction, "sendonly");
        assert_eq!(s[1].msid_track.as_deref(), Some("p4/camera"));
    }
}
