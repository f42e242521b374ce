//! Timestamps carried in transactions.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time chosen by the proposer of a transaction, so every replica
/// stamps `CreatedAt`/`UpdatedAt` with the same value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(_) => Timestamp::default(),
        }
    }

    /// RFC 3339 in UTC the way Go prints it: `Z`, nanoseconds with trailing
    /// zeros trimmed, no fraction at all when it is zero.
    pub fn to_rfc3339(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let secs_of_day = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
        let mut s = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}");
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos.min(999_999_999));
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }
}

/// Howard Hinnant's days-since-epoch to proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_rfc3339() {
        let t = Timestamp {
            secs: 1_795_549_565,
            nanos: 568_955_620,
        };
        assert_eq!(t.to_rfc3339(), "2026-11-24T19:46:05.56895562Z");
        assert_eq!(Timestamp::default().to_rfc3339(), "1970-01-01T00:00:00Z");
        let leap = Timestamp {
            secs: 951_782_400,
            nanos: 1,
        };
        assert_eq!(leap.to_rfc3339(), "2000-02-29T00:00:00.000000001Z");
    }
}
