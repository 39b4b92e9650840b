//! Success bodies: the `{"data", "meta"}` envelope, and how a session and a
//! timeline are shown.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::input::Page;
use super::schedule::{format_time, weekday_name, Cycle};
use super::store::{Sched, Timeline};

pub(super) fn ok(data: Value) -> Response {
    Json(json!({"data": data, "meta": {"message": "success"}})).into_response()
}

pub(super) fn ok_page(data: Vec<Value>, page: Page, count: usize) -> Response {
    Json(json!({
        "data": data,
        "meta": {"message": "success", "meta": {"skip": page.skip, "take": page.take, "count": count}},
    }))
    .into_response()
}

pub(super) fn session_view(s: &Sched) -> Value {
    json!({
        "id": s.id.to_string(),
        "type": s.kind.as_str(),
        "timelineId": s.timeline_id.to_string(),
        "name": s.name,
        "startDateTime": s.start.map(format_time),
        "endDateTime": s.end.map(format_time),
        "repeatCycleType": s.cycle.map(Cycle::as_str),
        "recurringDayOfWeek": s.weekday.map(weekday_name),
        "description": s.description,
        "createdAt": format_time(s.created_at),
        "updatedAt": format_time(s.updated_at),
        "removedAt": s.removed_at.map(format_time),
    })
}

pub(super) fn timeline_view(t: &Timeline) -> Value {
    json!({
        "id": t.id.to_string(),
        "name": t.name,
        "userId": t.user_id,
        "createdAt": format_time(t.created_at),
        "updatedAt": format_time(t.updated_at),
    })
}
