//! Reading requests: path ids, JSON bodies and their fields (each problem
//! reported as class-validator would), the cross-field rules of a schedule,
//! and paging query strings.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{Map, Value};
use sessiond_client::SessionId;
use utoipa::{IntoParams, ToSchema};

use super::schedule::{self, parse_time, weekday_name, weekday_of, Cycle, DayOfWeek};
use super::store::Kind;
use super::{ScheduledError, DEFAULT_TAKE, MAX_DESCRIPTION, MAX_NAME, MAX_TAKE};

/// The body of `POST /sessions`. Read leniently (by `parse_input`): every
/// problem is reported, one message each.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ScheduledSessionCreate {
    #[serde(rename = "type")]
    #[schema(inline)]
    kind: Kind,
    /// The timeline (the caller's, unless an administrator).
    #[schema(format = Uuid)]
    timeline_id: String,
    /// Its name.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    name: String,
    /// Start of the (first) occurrence (ISO 8601; without an offset, UTC).
    #[schema(format = DateTime)]
    start_date_time: Option<String>,
    /// End of the (first) occurrence, after `startDateTime`.
    #[schema(format = DateTime)]
    end_date_time: Option<String>,
    /// Required for RECURRING, refused for ONE_TIME.
    #[schema(inline)]
    repeat_cycle_type: Option<Cycle>,
    /// For a WEEKLY session: must be the UTC weekday of `startDateTime`.
    #[schema(inline)]
    recurring_day_of_week: Option<DayOfWeek>,
    /// Its description.
    #[schema(max_length = 4000)]
    description: Option<String>,
}

/// The body of `PATCH /sessions/{id}`: the fields to change; absent ones are
/// kept. `type`, `timelineId` and `name` may not be null.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ScheduledSessionUpdate {
    #[serde(rename = "type")]
    #[schema(inline, nullable = false)]
    kind: Option<Kind>,
    /// May only repeat the session's own timeline.
    #[schema(format = Uuid, nullable = false)]
    timeline_id: Option<String>,
    /// Its name.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S", nullable = false)]
    name: Option<String>,
    /// Start of the (first) occurrence; null clears it.
    #[schema(format = DateTime)]
    start_date_time: Option<String>,
    /// End of the (first) occurrence; null clears it.
    #[schema(format = DateTime)]
    end_date_time: Option<String>,
    /// Required for RECURRING, refused for ONE_TIME.
    #[schema(inline)]
    repeat_cycle_type: Option<Cycle>,
    /// For a WEEKLY session: must be the UTC weekday of `startDateTime`.
    #[schema(inline)]
    recurring_day_of_week: Option<DayOfWeek>,
    /// Its description; null clears it.
    #[schema(max_length = 4000)]
    description: Option<String>,
}

/// The body of `POST /timelines`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ScheduledTimelineCreate {
    /// Its name.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    name: String,
}

/// A UUID in its canonical hyphenated form (any case).
pub(super) fn parse_uuid(s: &str) -> Option<SessionId> {
    (s.len() == 36).then(|| s.parse().ok()).flatten()
}

pub(super) fn path_id(
    id: Result<Path<String>, PathRejection>,
) -> Result<SessionId, ScheduledError> {
    let Ok(Path(id)) = id else {
        return Err(ScheduledError::bad("Validation failed (uuid is expected)"));
    };
    parse_uuid(&id).ok_or_else(|| ScheduledError::bad("Validation failed (uuid is expected)"))
}

pub(super) fn json_object(
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Map<String, Value>, ScheduledError> {
    match payload {
        Ok(Json(Value::Object(map))) => Ok(map),
        Ok(_) => Err(ScheduledError::bad("The body must be a JSON object")),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ScheduledError::fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The body is too large",
        )),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ScheduledError::bad(
            "Expected Content-Type: application/json",
        )),
        Err(_) => Err(ScheduledError::bad("Malformed JSON body")),
    }
}

/// A field of a request: absent, explicitly null, or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    pub(super) fn given(&self) -> bool {
        !matches!(self, Self::Absent)
    }

    /// The value set, or `old` when the field is absent or null.
    pub(super) fn or(&self, old: T) -> T
    where
        T: Clone,
    {
        match self {
            Self::Set(v) => v.clone(),
            Self::Absent | Self::Null => old,
        }
    }

    /// An optional value after the request: set, cleared by null, or `old`
    /// when absent.
    pub(super) fn or_old(&self, old: Option<T>) -> Option<T>
    where
        T: Clone,
    {
        match self {
            Self::Set(v) => Some(v.clone()),
            Self::Null => None,
            Self::Absent => old,
        }
    }
}

/// A create or update request, each field checked on its own.
#[derive(Debug, Default)]
pub(super) struct Input {
    pub(super) kind: Field<Kind>,
    pub(super) timeline_id: Field<SessionId>,
    pub(super) name: Field<String>,
    pub(super) start: Field<i64>,
    pub(super) end: Field<i64>,
    pub(super) cycle: Field<Cycle>,
    pub(super) weekday: Field<chrono::Weekday>,
    pub(super) description: Field<String>,
}

/// Reads one field with `parse`, recording a problem under `name` if it fails.
pub(super) fn field<T>(
    map: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Field<T> {
    match map.get(name) {
        None => Field::Absent,
        Some(Value::Null) => Field::Null,
        Some(v) => match parse(v) {
            Ok(t) => Field::Set(t),
            Err(m) => {
                problems.push(format!("{name} {m}"));
                Field::Absent
            }
        },
    }
}

pub(super) fn string_of(v: &Value, max: usize, non_empty: bool) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err("must be a string".into());
    };
    if non_empty && s.trim().is_empty() {
        return Err("should not be empty".into());
    }
    if s.chars().count() > max {
        return Err(format!("must be shorter than or equal to {max} characters"));
    }
    Ok(s.clone())
}

fn time_of(v: &Value) -> Result<i64, String> {
    v.as_str()
        .and_then(parse_time)
        .ok_or_else(|| "must be a valid ISO 8601 date string".to_owned())
}

/// The request's fields and the problems found in them.
pub(super) fn parse_input(map: &Map<String, Value>) -> (Input, Vec<String>) {
    let mut p = Vec::new();
    let input = Input {
        kind: field(map, "type", &mut p, |v| {
            v.as_str().and_then(Kind::parse).ok_or_else(|| {
                "must be one of the following values: ONE_TIME, RECURRING".to_owned()
            })
        }),
        timeline_id: field(map, "timelineId", &mut p, |v| {
            v.as_str()
                .and_then(parse_uuid)
                .ok_or_else(|| "must be a UUID".to_owned())
        }),
        name: field(map, "name", &mut p, |v| string_of(v, MAX_NAME, true)),
        start: field(map, "startDateTime", &mut p, time_of),
        end: field(map, "endDateTime", &mut p, time_of),
        cycle: field(map, "repeatCycleType", &mut p, |v| {
            v.as_str()
                .and_then(Cycle::parse)
                .ok_or_else(|| "must be one of the following values: DAILY, WEEKLY".to_owned())
        }),
        weekday: field(map, "recurringDayOfWeek", &mut p, |v| {
            v.as_str()
                .and_then(|s| schedule::WEEKDAYS.iter().position(|d| *d == s))
                .and_then(|i| u8::try_from(i).ok())
                .and_then(|i| chrono::Weekday::try_from(i).ok())
                .ok_or_else(|| {
                    format!(
                        "must be one of the following values: {}",
                        schedule::WEEKDAYS.join(", ")
                    )
                })
        }),
        description: field(map, "description", &mut p, |v| {
            string_of(v, MAX_DESCRIPTION, false)
        }),
    };
    // Fields that may not be null (absent is fine for PATCH; create checks
    // presence itself). The times are optional: null means none.
    for (name, null) in [
        ("type", input.kind == Field::Null),
        ("timelineId", input.timeline_id == Field::Null),
        ("name", input.name == Field::Null),
    ] {
        if null {
            p.push(format!("{name} should not be null"));
        }
    }
    (input, p)
}

/// The schedule of a session once the request is applied to `base` (the
/// stored session, or nothing on create): recurrence fields made consistent,
/// cross-field rules checked.
pub(super) fn settle(
    kind: Kind,
    start: Option<i64>,
    end: Option<i64>,
    base: (Option<Cycle>, Option<chrono::Weekday>),
    input: &Input,
) -> Result<(Option<Cycle>, Option<chrono::Weekday>), ScheduledError> {
    let (base_cycle, base_weekday) = base;
    let mut p = Vec::new();
    if let (Some(start), Some(end)) = (start, end) {
        if end <= start {
            p.push("endDateTime must be after startDateTime".to_owned());
        }
    }
    let explicit_cycle = match &input.cycle {
        Field::Set(c) => Some(*c),
        _ => None,
    };
    let explicit_day = match &input.weekday {
        Field::Set(d) => Some(*d),
        _ => None,
    };
    let (cycle, weekday) = match kind {
        Kind::OneTime => {
            if explicit_cycle.is_some() {
                p.push("repeatCycleType must be empty for ONE_TIME sessions".into());
            }
            if explicit_day.is_some() {
                p.push("recurringDayOfWeek must be empty for ONE_TIME sessions".into());
            }
            (None, None)
        }
        Kind::Recurring => {
            let cycle = match &input.cycle {
                Field::Set(c) => Some(*c),
                Field::Null => None,
                Field::Absent => base_cycle,
            };
            match cycle {
                None => {
                    p.push("repeatCycleType is required for RECURRING sessions".into());
                    (None, None)
                }
                Some(Cycle::Daily) => {
                    if explicit_day.is_some() {
                        p.push("recurringDayOfWeek must be empty for DAILY sessions".into());
                    }
                    (Some(Cycle::Daily), None)
                }
                Some(Cycle::Weekly) => match start {
                    Some(start) => {
                        let day = weekday_of(start);
                        if explicit_day.is_some_and(|d| d != day) {
                            p.push(format!(
                                "recurringDayOfWeek must be the UTC weekday of startDateTime ({})",
                                weekday_name(day)
                            ));
                        }
                        (Some(Cycle::Weekly), Some(day))
                    }
                    // No start to derive it from: as given.
                    None => (Some(Cycle::Weekly), input.weekday.or_old(base_weekday)),
                },
            }
        }
    };
    if let (Some(c), Some(start), Some(end)) = (cycle, start, end) {
        if end - start > c.period_ms() {
            p.push(format!(
                "a {} session may not last longer than its period",
                c.as_str()
            ));
        }
    }
    if p.is_empty() {
        Ok((cycle, weekday))
    } else {
        Err(ScheduledError::fields(p))
    }
}

/// Paging of a list.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    pub(super) skip: u64,
    pub(super) take: u64,
}

pub(super) type QueryMap = std::collections::HashMap<String, String>;

/// The paging parameters of the list routes, as the OpenAPI describes them
/// ([`page_of`] reads them; the bounds are its own, see the test below).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct Paging {
    /// Records to skip (default 0).
    #[param(minimum = 0, maximum = 4_294_967_295_u32)]
    skip: Option<u64>,
    /// Records to return (default 10).
    #[param(minimum = 0, maximum = 100)]
    take: Option<u64>,
}

pub(super) fn page_of(q: &QueryMap, problems: &mut Vec<String>) -> Page {
    let mut number = |name: &str, default: u64, max: u64| match q.get(name) {
        None => default,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= max && s.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                problems.push(format!("{name} must be an integer between 0 and {max}"));
                default
            }
        },
    };
    Page {
        skip: number("skip", 0, u64::from(u32::MAX)),
        take: number("take", DEFAULT_TAKE, MAX_TAKE),
    }
}

pub(super) fn paged<T>(items: Vec<T>, page: Page) -> impl Iterator<Item = T> {
    let skip = usize::try_from(page.skip).unwrap_or(usize::MAX);
    let take = usize::try_from(page.take).unwrap_or(usize::MAX);
    items.into_iter().skip(skip).take(take)
}

pub(super) fn query_of(
    query: Result<Query<QueryMap>, QueryRejection>,
) -> Result<QueryMap, ScheduledError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ScheduledError::bad("Malformed query string"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The documented bounds are the ones `page_of` enforces.
    #[test]
    fn the_paging_description_has_the_read_bounds() {
        let params = serde_json::to_value(Paging::into_params(|| None)).unwrap();
        let max = |name: &str| {
            params
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["schema"]["maximum"].as_u64().unwrap())
                .unwrap()
        };
        assert_eq!(max("take"), MAX_TAKE);
        assert_eq!(max("skip"), u64::from(u32::MAX));
    }
}
