//! The OpenAPI fragment of the scheduled-sessions API: every route, every
//! status it answers and the shapes of its bodies.

use serde_json::{json, Value};

use super::schedule::WEEKDAYS;
use super::{DEFAULT_TAKE, MAX_TAKE};

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": reference(schema)}}
    })
}

fn error(description: &str) -> Value {
    body(description, "ScheduledError")
}

fn unauthorized() -> Value {
    json!({
        "description": "missing, malformed, forged or expired bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": reference("ScheduledError")}}
    })
}

fn id_param() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "the session's UUID",
        "schema": {"type": "string", "format": "uuid"}
    })
}

fn paging_params() -> Vec<Value> {
    vec![
        json!({"name": "skip", "in": "query", "required": false,
               "description": "records to skip (default 0)",
               "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}}),
        json!({"name": "take", "in": "query", "required": false,
               "description": format!("records to return (default {DEFAULT_TAKE})"),
               "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TAKE}}),
    ]
}

fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": {"application/json": {"schema": reference(schema)}}
    })
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (Value, Value) {
    let security = json!([{"bearer": []}]);
    let mut list_params = vec![
        json!({"name": "timelineId", "in": "query", "required": false,
               "description": "only the sessions of this timeline",
               "schema": {"type": "string", "format": "uuid"}}),
        json!({"name": "startDateTimeSortOrder", "in": "query", "required": false,
               "description": "sort by startDateTime (default DESC)",
               "schema": {"type": "string", "enum": ["ASC", "DESC"]}}),
    ];
    list_params.extend(paging_params());
    let paths = json!({
        "/sessions": {
            "get": {
                "summary": "List the caller's scheduled sessions (an administrator's: everyone's)",
                "tags": ["scheduled-sessions"],
                "security": security,
                "parameters": list_params,
                "responses": {
                    "200": body("a page of sessions; meta.meta.count is the total", "ScheduledSessionList"),
                    "400": error("invalid query parameters"),
                    "401": unauthorized(),
                    "403": error("the timeline belongs to another user"),
                    "503": error("the session store is unavailable")
                }
            },
            "post": {
                "summary": "Create a scheduled session",
                "tags": ["scheduled-sessions"],
                "security": security,
                "requestBody": json_body("ScheduledSessionCreate"),
                "responses": {
                    "200": body("the created session", "ScheduledSessionEnvelope"),
                    "400": error("invalid fields, or an unknown timelineId"),
                    "401": unauthorized(),
                    "403": error("the timeline belongs to another user"),
                    "409": error("the session overlaps another session of the timeline or of the same user"),
                    "413": error("the body is too large"),
                    "503": error("the session store is unavailable or the timeline busy")
                }
            }
        },
        "/sessions/{id}": {
            "get": {
                "summary": "One scheduled session",
                "tags": ["scheduled-sessions"],
                "security": security,
                "parameters": [id_param()],
                "responses": {
                    "200": body("the session", "ScheduledSessionEnvelope"),
                    "400": error("the id is not a UUID"),
                    "401": unauthorized(),
                    "404": error("no such session (or removed, or another user's)"),
                    "503": error("the session store is unavailable")
                }
            },
            "patch": {
                "summary": "Change some fields of a scheduled session",
                "tags": ["scheduled-sessions"],
                "security": security,
                "parameters": [id_param()],
                "requestBody": json_body("ScheduledSessionUpdate"),
                "responses": {
                    "200": body("the updated session", "ScheduledSessionEnvelope"),
                    "400": error("invalid fields"),
                    "401": unauthorized(),
                    "404": error("no such session (or removed, or another user's)"),
                    "409": error("the session would overlap another session of the timeline or of the same user"),
                    "413": error("the body is too large"),
                    "503": error("the session store is unavailable or the timeline busy")
                }
            },
            "delete": {
                "summary": "Remove a scheduled session (soft delete: removedAt is set)",
                "tags": ["scheduled-sessions"],
                "security": security,
                "parameters": [id_param()],
                "responses": {
                    "200": body("the removed session", "ScheduledSessionEnvelope"),
                    "400": error("the id is not a UUID"),
                    "401": unauthorized(),
                    "404": error("no such session (or already removed, or another user's)"),
                    "503": error("the session store is unavailable or the timeline busy")
                }
            }
        },
        "/timelines": {
            "get": {
                "summary": "List the caller's timelines, oldest first (by creation time in milliseconds; ties in id order)",
                "tags": ["scheduled-sessions"],
                "security": security,
                "parameters": paging_params(),
                "responses": {
                    "200": body("a page of timelines; meta.meta.count is the total", "ScheduledTimelineList"),
                    "400": error("invalid query parameters"),
                    "401": unauthorized(),
                    "503": error("the session store is unavailable")
                }
            },
            "post": {
                "summary": "Create a timeline owned by the caller",
                "tags": ["scheduled-sessions"],
                "security": security,
                "requestBody": json_body("ScheduledTimelineCreate"),
                "responses": {
                    "200": body("the created timeline", "ScheduledTimelineEnvelope"),
                    "400": error("invalid fields"),
                    "401": unauthorized(),
                    "413": error("the body is too large"),
                    "503": error("the session store is unavailable")
                }
            }
        }
    });

    let time = json!({"type": "string", "format": "date-time"});
    let nullable_time = json!({"type": "string", "format": "date-time", "nullable": true});
    let start = json!({"type": "string", "format": "date-time", "nullable": true,
                       "description": "start of the (first) occurrence; null when none was given"});
    let end = json!({"type": "string", "format": "date-time", "nullable": true,
                     "description": "end of the (first) occurrence; null when none was given. \
                                     A session without both times overlaps nothing"});
    let update_time = json!({"type": "string", "format": "date-time", "nullable": true,
                             "description": "null clears it"});
    let kind = json!({"type": "string", "enum": ["ONE_TIME", "RECURRING"]});
    let cycle = json!({"type": "string", "enum": ["DAILY", "WEEKLY"], "nullable": true});
    let weekday = json!({"type": "string", "enum": WEEKDAYS, "nullable": true});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"});
    let description = json!({"type": "string", "maxLength": 4000, "nullable": true});
    let page_meta = json!({
        "type": "object",
        "required": ["message", "meta"],
        "properties": {
            "message": {"type": "string"},
            "meta": {
                "type": "object",
                "required": ["skip", "take", "count"],
                "properties": {
                    "skip": {"type": "integer", "minimum": 0},
                    "take": {"type": "integer", "minimum": 0},
                    "count": {"type": "integer", "minimum": 0}
                }
            }
        }
    });
    let one_meta = json!({
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}}
    });
    let schemas = json!({
        "ScheduledSession": {
            "type": "object",
            "required": ["id", "type", "timelineId", "name", "startDateTime", "endDateTime",
                         "repeatCycleType", "recurringDayOfWeek", "description",
                         "createdAt", "updatedAt", "removedAt"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "type": kind,
                "timelineId": {"type": "string", "format": "uuid"},
                "name": {"type": "string"},
                "startDateTime": start,
                "endDateTime": end,
                "repeatCycleType": cycle,
                "recurringDayOfWeek": weekday,
                "description": {"type": "string", "nullable": true},
                "createdAt": time,
                "updatedAt": time,
                "removedAt": nullable_time
            }
        },
        "ScheduledSessionCreate": {
            "type": "object",
            "required": ["type", "timelineId", "name"],
            "properties": {
                "type": kind,
                "timelineId": {"type": "string", "format": "uuid"},
                "name": name,
                "startDateTime": nullable_time,
                "endDateTime": nullable_time,
                "repeatCycleType": cycle,
                "recurringDayOfWeek": weekday,
                "description": description
            }
        },
        "ScheduledSessionUpdate": {
            "type": "object",
            "properties": {
                "type": kind,
                "timelineId": {"type": "string", "format": "uuid",
                               "description": "may only repeat the session's own timeline"},
                "name": name,
                "startDateTime": update_time,
                "endDateTime": update_time,
                "repeatCycleType": cycle,
                "recurringDayOfWeek": weekday,
                "description": description
            }
        },
        "ScheduledSessionEnvelope": {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {"data": reference("ScheduledSession"), "meta": one_meta}
        },
        "ScheduledSessionList": {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {
                "data": {"type": "array", "items": reference("ScheduledSession")},
                "meta": page_meta
            }
        },
        "ScheduledTimeline": {
            "type": "object",
            "required": ["id", "name", "userId", "createdAt", "updatedAt"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "name": {"type": "string"},
                "userId": {"type": "string"},
                "createdAt": time,
                "updatedAt": time
            }
        },
        "ScheduledTimelineCreate": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": name}
        },
        "ScheduledTimelineEnvelope": {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {"data": reference("ScheduledTimeline"), "meta": one_meta}
        },
        "ScheduledTimelineList": {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {
                "data": {"type": "array", "items": reference("ScheduledTimeline")},
                "meta": page_meta
            }
        },
        "ScheduledError": {
            "type": "object",
            "required": ["statusCode", "message", "error"],
            "properties": {
                "statusCode": {"type": "integer"},
                "message": {"oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}}
                ]},
                "error": {"type": "string"}
            }
        }
    });
    (paths, schemas)
}
