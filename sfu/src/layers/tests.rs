//! The layer-selection rules, each pinned with plain numbers.

use super::*;

fn t0() -> Instant {
    // Unit tests need one real instant to count from.
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn camera(key: u32, class: Class) -> VideoTrack<u32> {
    VideoTrack {
        key,
        class,
        layers: vec![(0, 150_000), (1, 450_000), (2, 1_200_000)],
    }
}

#[test]
fn layer_names_order() {
    assert!(layer_index(Some("l")) < layer_index(Some("m")));
    assert!(layer_index(Some("m")) < layer_index(Some("h")));
    assert_eq!(layer_index(None), 0);
}

#[test]
fn plenty_gives_every_top_layer() {
    let tracks = [camera(1, Class::StaffCamera), camera(2, Class::PupilCamera)];
    let a = allocate(10_000_000, 40_000, &tracks);
    assert_eq!(a.layers, vec![Some(2), Some(2)]);
    assert!(!a.paused);
}

#[test]
fn priority_order_is_screen_teacher_pupils() {
    let tracks = [
        camera(1, Class::PupilCamera),
        camera(2, Class::StaffCamera),
        camera(3, Class::StaffScreen),
    ];
    // Room for three lowest layers and one upgrade to the middle.
    let a = allocate(950_000, 40_000, &tracks);
    assert_eq!(a.layers, vec![Some(0), Some(0), Some(1)]);
    // Room for one lowest layer only: the screen share gets it.
    let a = allocate(250_000, 40_000, &tracks);
    assert_eq!(a.layers, vec![None, None, Some(0)]);
    assert!(!a.paused);
}

#[test]
fn five_hundred_kbit_gets_the_lowest_camera_layer_and_audio() {
    let a = allocate(500_000, 40_000, &[camera(1, Class::StaffCamera)]);
    assert_eq!(a.layers, vec![Some(0)]);
}

#[test]
fn too_little_for_the_lowest_layer_pauses_video_not_audio() {
    let a = allocate(150_000, 40_000, &[camera(1, Class::StaffCamera)]);
    assert_eq!(a.layers, vec![None]);
    assert!(a.paused);
    // No video at all: nothing to pause.
    let none: [VideoTrack<u32>; 0] = [];
    assert!(!allocate(10_000, 40_000, &none).paused);
}

#[test]
fn top_covers_every_top_layer_with_margin() {
    let d = top(40_000, &[camera(1, Class::StaffCamera)]);
    assert!(d as f64 >= 1_240_000.0 * OVERHEAD * UP_MARGIN - 1.0);
}

#[test]
fn desired_is_the_next_rung_up_not_the_top() {
    let tracks = [camera(1, Class::StaffCamera)];
    let rung = |video: u64| ((40_000 + video) as f64 * OVERHEAD * UP_MARGIN) as u64;
    let assert_near = |got: u64, want: u64| assert!(got.abs_diff(want) <= 2, "{got} vs {want}");
    // Held on the lowest layer by a 500 kbit/s link: the middle layer.
    assert_near(desired(500_000, 40_000, &tracks), rung(450_000));
    // Paused at 150 kbit/s: the lowest layer.
    assert_near(desired(150_000, 40_000, &tracks), rung(150_000));
    // Once a probe finds room for the middle: the top.
    assert_near(desired(rung(450_000) + 1, 40_000, &tracks), rung(1_200_000));
    // Everything carried: the top, never more.
    assert_near(desired(50_000_000, 40_000, &tracks), top(40_000, &tracks));
    // Two tracks: both lowest layers come before any upgrade.
    let two = [camera(1, Class::StaffCamera), camera(2, Class::PupilCamera)];
    assert_near(desired(rung(150_000) + 1, 40_000, &two), rung(300_000));
    // No burst str0m makes of it (twice the desired bitrate) reaches
    // three times a 500 kbit/s link held on the lowest layer.
    assert!(2 * desired(500_000, 40_000, &tracks) < 1_500_000);
}

#[test]
fn desired_rate_moves_only_beyond_its_band() {
    let mut d = DesiredRate::default();
    assert_eq!(d.update(1_000_000), 1_000_000);
    // Wobbles of the measured rates do not move it.
    assert_eq!(d.update(1_100_000), 1_000_000);
    assert_eq!(d.update(900_000), 1_000_000);
    // A new rung does.
    assert_eq!(d.update(1_800_000), 1_800_000);
    assert_eq!(d.update(700_000), 700_000);
    // Zero (nothing to probe for) is taken at once.
    assert_eq!(d.update(0), 0);
    assert_eq!(d.update(700_000), 700_000);
}

#[test]
fn selector_goes_down_at_once_and_up_after_the_hold() {
    let tracks = [camera(1, Class::StaffCamera)];
    let mut s = Selector::<u32>::default();
    let t = t0();
    assert_eq!(
        s.select(t, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(2)]
    );
    // Down at once.
    let t = t + Duration::from_millis(100);
    assert_eq!(
        s.select(t, 500_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    // Up: not before the hold, even with plenty.
    let t1 = t + Duration::from_millis(100);
    assert_eq!(
        s.select(t1, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    let t2 = t1 + UP_HOLD / 2;
    assert_eq!(
        s.select(t2, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    // An interruption restarts the hold.
    let t3 = t2 + Duration::from_millis(10);
    assert_eq!(
        s.select(t3, 500_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    let t4 = t3 + UP_HOLD - Duration::from_millis(1);
    assert_eq!(
        s.select(t4, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    let t5 = t4 + UP_HOLD;
    assert_eq!(
        s.select(t5, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(2)]
    );
}

#[test]
fn selector_needs_headroom_to_go_up() {
    let tracks = [camera(1, Class::StaffCamera)];
    let mut s = Selector::<u32>::default();
    let t = t0();
    assert_eq!(
        s.select(t, 500_000, false, 40_000, &tracks).layers,
        vec![Some(0)]
    );
    // Enough for the middle layer exactly, not with the margin: stays.
    let just = (cost(40_000) + cost(450_000)) as u64 + 1;
    for i in 1..10 {
        let a = s.select(t + UP_HOLD * i, just, false, 40_000, &tracks);
        assert_eq!(a.layers, vec![Some(0)]);
    }
}

#[test]
fn selector_pauses_after_the_hold_and_resumes_with_headroom() {
    let tracks = [camera(1, Class::StaffCamera)];
    let mut s = Selector::<u32>::default();
    let t = t0();
    assert!(!s.select(t, 2_000_000, false, 40_000, &tracks).paused);
    // A dip: held at the lowest layer, not paused.
    let a = s.select(t, 100_000, false, 40_000, &tracks);
    assert_eq!((a.paused, a.layers), (false, vec![Some(0)]));
    let a = s.select(t + PAUSE_HOLD / 2, 500_000, false, 40_000, &tracks);
    assert_eq!((a.paused, a.layers), (false, vec![Some(0)]));
    // Below for the whole hold: paused.
    let t = t + PAUSE_HOLD;
    assert!(!s.select(t, 100_000, false, 40_000, &tracks).paused);
    let a = s.select(t + PAUSE_HOLD, 100_000, false, 40_000, &tracks);
    assert!(a.paused);
    assert_eq!(a.layers, vec![None]);
    let t = t + PAUSE_HOLD;
    // Back above the lowest layer: resumes only after the hold.
    assert!(
        s.select(
            t + Duration::from_millis(1),
            600_000,
            false,
            40_000,
            &tracks
        )
        .paused
    );
    assert!(
        !s.select(t + UP_HOLD * 2, 600_000, false, 40_000, &tracks)
            .paused
    );
}

#[test]
fn selector_leaves_a_layer_that_stopped_arriving() {
    let mut tracks = [camera(1, Class::StaffCamera)];
    let mut s = Selector::<u32>::default();
    let t = t0();
    assert_eq!(
        s.select(t, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(2)]
    );
    tracks[0].layers.truncate(2);
    assert_eq!(
        s.select(t, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(1)]
    );
}

#[test]
fn tracks_coming_and_going_never_pause_or_unpause() {
    let teacher = camera(1, Class::StaffCamera);
    let pupil = camera(2, Class::PupilCamera);
    let mut s = Selector::<u32>::default();
    let t = t0();
    // Paused on a weak link.
    s.select(t, 100_000, false, 40_000, std::slice::from_ref(&teacher));
    let t = t + PAUSE_HOLD;
    assert!(
        s.select(t, 100_000, false, 40_000, std::slice::from_ref(&teacher))
            .paused
    );
    // A pupil's camera appears, the teacher's goes, both come back: still
    // paused every time, with no video.
    for (i, tracks) in [
        vec![teacher.clone(), pupil.clone()],
        vec![pupil.clone()],
        vec![],
        vec![teacher.clone(), pupil.clone()],
    ]
    .iter()
    .enumerate()
    {
        let a = s.select(
            t + Duration::from_millis(10 * i as u64),
            100_000,
            false,
            40_000,
            tracks,
        );
        assert!(a.paused, "{i}");
        assert!(a.layers.iter().all(Option::is_none), "{i}");
    }
    // Unpaused on the top layer: a second track appearing does not pause
    // (it gets what fits), nor does the first losing its layers.
    let mut s = Selector::<u32>::default();
    let a = s.select(t, 5_000_000, false, 40_000, std::slice::from_ref(&teacher));
    assert_eq!((a.paused, a.layers), (false, vec![Some(2)]));
    let a = s.select(
        t,
        5_000_000,
        false,
        40_000,
        &[teacher.clone(), pupil.clone()],
    );
    assert!(!a.paused);
    assert_eq!(a.layers[0], Some(2), "the first track keeps its layer");
    let a = s.select(t, 5_000_000, false, 40_000, &[]);
    assert!(!a.paused);
    let a = s.select(t, 5_000_000, false, 40_000, std::slice::from_ref(&pupil));
    assert!(!a.paused);
}

#[test]
fn a_track_that_comes_back_does_not_skip_the_upgrade_hold_of_the_others() {
    let teacher = camera(1, Class::StaffCamera);
    let pupil = camera(2, Class::PupilCamera);
    let mut s = Selector::<u32>::default();
    let t = t0();
    let both = [teacher.clone(), pupil.clone()];
    assert_eq!(
        s.select(t, 5_000_000, false, 40_000, &both).layers,
        vec![Some(2), Some(2)]
    );
    // Down to the lowest layers.
    assert_eq!(
        s.select(t, 500_000, false, 40_000, &both).layers,
        vec![Some(0), Some(0)]
    );
    // The pupil's camera stops, then comes back, with plenty of room:
    // the teacher's camera still waits for the hold.
    s.select(t, 5_000_000, false, 40_000, std::slice::from_ref(&teacher));
    let a = s.select(
        t + Duration::from_millis(10),
        5_000_000,
        false,
        40_000,
        &both,
    );
    assert_eq!(a.layers[0], Some(0));
    let a = s.select(t + UP_HOLD, 5_000_000, false, 40_000, &both);
    assert_eq!(a.layers, vec![Some(2), Some(2)]);
}

#[test]
fn congested_loss_gives_what_got_through_and_only_then() {
    // 1.5 Mbit/s into a 500 kbit/s link: two thirds lost.
    let got = delivered(1_500_000, 0.66).expect("congested");
    assert!((500_000..=520_000).contains(&got), "{got}");
    // ... which carries audio and the lowest layer only.
    let a = allocate(got, 40_000, &[camera(1, Class::StaffCamera)]);
    assert_eq!(a.layers, vec![Some(0)]);
    // Loss a link may have without congestion: no cap.
    assert_eq!(delivered(1_500_000, 0.05), None);
    assert_eq!(delivered(0, 0.5), None);
}

#[test]
fn what_is_sent_costs_the_written_layers() {
    let tracks = [camera(1, Class::StaffCamera), camera(2, Class::PupilCamera)];
    let c = sending_cost(40_000, &tracks, &[Some(2), None]);
    assert_eq!(c, ((40_000 + 1_200_000) as f64 * OVERHEAD) as u64);
    let c = sending_cost(40_000, &tracks, &[Some(0), Some(1)]);
    assert_eq!(c, ((40_000 + 150_000 + 450_000) as f64 * OVERHEAD) as u64);
}

#[test]
fn a_dip_within_the_slack_keeps_the_layer_congested_loss_does_not() {
    let tracks = [camera(1, Class::StaffCamera)];
    let top_cost = (cost(40_000) + cost(1_200_000)) as u64;
    let mut s = Selector::<u32>::default();
    let t = t0();
    assert_eq!(
        s.select(t, 5_000_000, false, 40_000, &tracks).layers,
        vec![Some(2)]
    );
    // An overuse signal's dip to 90 % of what is sent: kept.
    let dip = top_cost * 9 / 10;
    assert_eq!(
        s.select(t, dip, false, 40_000, &tracks).layers,
        vec![Some(2)]
    );
    // Below the slack: down.
    let low = (top_cost as f64 * DOWN_SLACK) as u64 - 1;
    assert_eq!(
        s.select(t, low, false, 40_000, &tracks).layers,
        vec![Some(1)]
    );
    // The same dip with congested loss reported: down at once.
    let mut s = Selector::<u32>::default();
    s.select(t, 5_000_000, false, 40_000, &tracks);
    assert_eq!(
        s.select(t, dip, true, 40_000, &tracks).layers,
        vec![Some(1)]
    );
}

#[test]
fn congested_loss_pauses_after_the_shorter_hold() {
    let tracks = [camera(1, Class::StaffCamera)];
    let mut s = Selector::<u32>::default();
    let t = t0();
    s.select(t, 2_000_000, false, 40_000, &tracks);
    // Loss reports say not even the lowest layer gets through.
    assert!(!s.select(t, 120_000, true, 40_000, &tracks).paused);
    assert!(
        !s.select(t + LOSS_HOLD / 2, 120_000, true, 40_000, &tracks)
            .paused
    );
    assert!(
        s.select(t + LOSS_HOLD, 120_000, true, 40_000, &tracks)
            .paused
    );
    // The same estimate without loss waits for the whole hold.
    let mut s = Selector::<u32>::default();
    s.select(t, 2_000_000, false, 40_000, &tracks);
    s.select(t, 120_000, false, 40_000, &tracks);
    assert!(
        !s.select(t + LOSS_HOLD, 120_000, false, 40_000, &tracks)
            .paused
    );
    assert!(
        s.select(t + PAUSE_HOLD, 120_000, false, 40_000, &tracks)
            .paused
    );
}

#[test]
fn rate_meter_measures_and_times_out() {
    let mut m = RateMeter::default();
    let t = t0();
    assert_eq!(m.rate(t), None);
    // 100 frames of 1250 bytes over 2 s: 500 kbit/s.
    for i in 0..100 {
        m.record(t + Duration::from_millis(20 * i), 1250);
    }
    let r = m.rate(t + Duration::from_secs(2)).expect("arriving");
    assert!((450_000..=550_000).contains(&r), "{r}");
    assert_eq!(m.rate(t + Duration::from_secs(10)), None);
}

#[test]
fn keyframe_requests_are_bounded() {
    let mut k = KeyframeLimiter::default();
    let t = t0();
    // 100 requests a second for 10 s (a lossy subscriber).
    let allowed = (0..1000)
        .filter(|i| k.allow(t + Duration::from_millis(10 * i)))
        .count();
    let bound = (10_000 / KEYFRAME_INTERVAL.as_millis()) as usize + 1;
    assert!(allowed <= bound, "{allowed} > {bound}");
    assert!(allowed >= bound - 1);
}
