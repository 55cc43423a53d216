//! UTC days and months as usage is counted: `YYYY-MM-DD` and `YYYY-MM`.

use time::{Date, Month, OffsetDateTime};

fn date_of(unix_secs: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

/// `YYYY-MM-DD` of a unix time.
pub fn day(unix_secs: i64) -> String {
    let d = date_of(unix_secs);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

/// `YYYY-MM` of a unix time.
pub fn month(unix_secs: i64) -> String {
    let d = date_of(unix_secs);
    format!("{:04}-{:02}", d.year(), d.month() as u8)
}

/// Unix time of the first second of the month containing `unix_secs`.
pub fn month_start(unix_secs: i64) -> i64 {
    let d = date_of(unix_secs);
    Date::from_calendar_date(d.year(), d.month(), 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(unix_secs)
}

/// Unix time of the first second of the month after the one containing `unix_secs`.
pub fn next_month_start(unix_secs: i64) -> i64 {
    let d = date_of(unix_secs);
    let (year, month) = match d.month() {
        Month::December => (d.year() + 1, Month::January),
        m => (d.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(unix_secs + 31 * 86_400)
}

/// Parses `YYYY-MM-DD` to the unix time of its midnight.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months() {
        // 2026-11-26T08:58:33Z
        let t = 1_795_683_513;
        assert_eq!(day(t), "2026-11-26");
        assert_eq!(month(t), "2026-11");
        assert_eq!(day(next_month_start(t)), "2026-12-01");
        assert_eq!(next_month_start(t) % 86_400, 0);
        assert_eq!(day(month_start(t)), "2026-11-01");
        assert_eq!(month_start(month_start(t)), month_start(t));
        assert_eq!(month_start(next_month_start(t) - 1), month_start(t));
        let dec = parse_day("2026-12-31").unwrap();
        assert_eq!(day(next_month_start(dec)), "2027-01-01");
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("26-01-01"), None);
        assert_eq!(day(parse_day("2024-02-29").unwrap()), "2024-02-29");
    }
}
