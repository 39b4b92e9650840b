//! Success bodies: the `{"data", "meta"}` envelope, and how a session and a
//! timeline are shown. Each body is a type whose schema the OpenAPI
//! description gives (see the handlers' `#[utoipa::path]`).

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::input::Page;
use super::schedule::{format_time, Cycle, DayOfWeek};
use super::store::{Kind, Sched, Timeline};

/// The `meta` of a single item: `{"message": "success"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemMeta {
    /// Always `success`.
    message: &'static str,
}

impl ItemMeta {
    const SUCCESS: Self = Self { message: "success" };
}

/// The paging of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paging {
    /// Records skipped.
    skip: u64,
    /// Records asked for (at most this many are in `data`).
    take: u64,
    /// The total number of records, before paging.
    count: usize,
}

/// The `meta` of a list: `{"message": "success", "meta": {skip, take, count}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageMeta {
    /// Always `success`.
    message: &'static str,
    #[schema(inline)]
    meta: Paging,
}

impl PageMeta {
    fn new(page: Page, count: usize) -> Self {
        Self {
            message: "success",
            meta: Paging {
                skip: page.skip,
                take: page.take,
                count,
            },
        }
    }
}

/// A scheduled session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledSession {
    /// The session's id.
    #[schema(format = Uuid)]
    id: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    kind: Kind,
    /// The timeline it belongs to.
    #[schema(format = Uuid)]
    timeline_id: String,
    /// Its name.
    name: String,
    /// Start of the (first) occurrence; null when none was given.
    #[schema(format = DateTime, required = true)]
    start_date_time: Option<String>,
    /// End of the (first) occurrence; null when none was given. A session
    /// without both times overlaps nothing.
    #[schema(format = DateTime, required = true)]
    end_date_time: Option<String>,
    /// How a recurring session repeats; null for a one-time session.
    #[schema(inline, required = true)]
    repeat_cycle_type: Option<Cycle>,
    /// The UTC weekday of a weekly session.
    #[schema(inline, required = true)]
    recurring_day_of_week: Option<DayOfWeek>,
    /// Its description.
    #[schema(required = true)]
    description: Option<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it was last changed.
    #[schema(format = DateTime)]
    updated_at: String,
    /// When it was removed (soft delete); null while it is not.
    #[schema(format = DateTime, required = true)]
    removed_at: Option<String>,
}

/// A timeline (a "routine" in the document).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTimeline {
    /// The timeline's id.
    #[schema(format = Uuid)]
    id: String,
    /// Its name.
    name: String,
    /// Its owner.
    user_id: String,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it was last changed.
    #[schema(format = DateTime)]
    updated_at: String,
}

/// One scheduled session: `{"data": <session>, "meta": {"message": "success"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledSessionEnvelope {
    /// The session.
    data: ScheduledSession,
    #[schema(inline)]
    meta: ItemMeta,
}

/// A page of scheduled sessions; `meta.meta.count` is the total.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledSessionList {
    /// The sessions of the page.
    data: Vec<ScheduledSession>,
    #[schema(inline)]
    meta: PageMeta,
}

/// One timeline: `{"data": <timeline>, "meta": {"message": "success"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledTimelineEnvelope {
    /// The timeline.
    data: ScheduledTimeline,
    #[schema(inline)]
    meta: ItemMeta,
}

/// A page of timelines; `meta.meta.count` is the total.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledTimelineList {
    /// The timelines of the page.
    data: Vec<ScheduledTimeline>,
    #[schema(inline)]
    meta: PageMeta,
}

/// `{"data": <session>, "meta": {"message": "success"}}`.
pub(super) fn ok_session(s: &Sched) -> Response {
    Json(ScheduledSessionEnvelope {
        data: session_view(s),
        meta: ItemMeta::SUCCESS,
    })
    .into_response()
}

/// `{"data": <timeline>, "meta": {"message": "success"}}`.
pub(super) fn ok_timeline(t: &Timeline) -> Response {
    Json(ScheduledTimelineEnvelope {
        data: timeline_view(t),
        meta: ItemMeta::SUCCESS,
    })
    .into_response()
}

/// A page of sessions, `count` of them in all.
pub(super) fn ok_sessions(
    sessions: impl Iterator<Item = Sched>,
    page: Page,
    count: usize,
) -> Response {
    Json(ScheduledSessionList {
        data: sessions.map(|s| session_view(&s)).collect(),
        meta: PageMeta::new(page, count),
    })
    .into_response()
}

/// A page of timelines, `count` of them in all.
pub(super) fn ok_timelines(
    timelines: impl Iterator<Item = Timeline>,
    page: Page,
    count: usize,
) -> Response {
    Json(ScheduledTimelineList {
        data: timelines.map(|t| timeline_view(&t)).collect(),
        meta: PageMeta::new(page, count),
    })
    .into_response()
}

fn session_view(s: &Sched) -> ScheduledSession {
    ScheduledSession {
        id: s.id.to_string(),
        kind: s.kind,
        timeline_id: s.timeline_id.to_string(),
        name: s.name.clone(),
        start_date_time: s.start.map(format_time),
        end_date_time: s.end.map(format_time),
        repeat_cycle_type: s.cycle,
        recurring_day_of_week: s.weekday.map(DayOfWeek::from),
        description: s.description.clone(),
        created_at: format_time(s.created_at),
        updated_at: format_time(s.updated_at),
        removed_at: s.removed_at.map(format_time),
    }
}

fn timeline_view(t: &Timeline) -> ScheduledTimeline {
    ScheduledTimeline {
        id: t.id.to_string(),
        name: t.name.clone(),
        user_id: t.user_id.clone(),
        created_at: format_time(t.created_at),
        updated_at: format_time(t.updated_at),
    }
}
