//! The OpenAPI fragment of the session-auth API: every route, every status it
//! answers and the shapes of its bodies.

use serde_json::{json, Map, Value as JsonValue};

use super::MAX_NAME_CHARS;

fn schema_ref(name: &str) -> JsonValue {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn respond(description: &str, schema: &str) -> JsonValue {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema_ref(schema)}}
    })
}

fn err(description: &str) -> JsonValue {
    respond(description, "SessionAuthError")
}

/// The responses every authenticated route may give besides its own.
fn guarded(mut responses: Map<String, JsonValue>) -> JsonValue {
    responses.insert("401".into(), err("no session cookie"));
    responses.insert(
        "403".into(),
        err("the cookie names no live session, or the user may not do this"),
    );
    responses.insert("503".into(), err("the session store is unreachable"));
    JsonValue::Object(responses)
}

fn map(v: JsonValue) -> Map<String, JsonValue> {
    match v {
        JsonValue::Object(m) => m,
        _ => Map::new(),
    }
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (JsonValue, JsonValue) {
    let cookie = json!([{"sessionCookie": []}]);
    let user_id = json!([{"name": "user_id", "in": "path", "required": true,
        "description": "A user id, or `me` for the current user", "schema": {"type": "string"}}]);
    let one_user = json!({
        "get": {
            "summary": "A user",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "responses": guarded(map(json!({
                "200": respond("the user", "SessionAuthUser"),
                "404": err("no such user")
            })))
        },
        "put": {
            "summary": "Change a user's names",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": schema_ref("SessionAuthUserUpdate")}}},
            "responses": guarded(map(json!({
                "200": respond("the updated user", "SessionAuthUser"),
                "400": err("Wrong format"),
                "404": err("no such user"),
                "413": err("body too large")
            })))
        },
        "delete": {
            "summary": "Delete a user (and end their sessions and tokens)",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "responses": guarded(map(json!({
                "200": respond("deleted", "SessionAuthEmpty"),
                "404": err("no such user")
            })))
        }
    });
    let items = [
        (
            "/api/v1/status",
            json!({"get": {"summary": "Status of the API", "tags": ["session-auth"],
                "responses": {"200": respond("up", "SessionAuthStatus")}}}),
        ),
        (
            "/api/v1/unauthorized",
            json!({"get": {"summary": "Always 401", "tags": ["session-auth"],
                "responses": {"401": err("Unauthorized")}}}),
        ),
        (
            "/api/v1/forbidden",
            json!({"get": {"summary": "Always 403", "tags": ["session-auth"],
                "responses": {"403": err("Forbidden")}}}),
        ),
        (
            "/api/v1/stats",
            json!({"get": {"summary": "Number of users", "tags": ["session-auth"],
                "security": cookie,
                "responses": guarded(map(json!({"200": respond("counts", "SessionAuthStats")})))}}),
        ),
        (
            "/api/v1/users",
            json!({
                "get": {"summary": "Every user (administrators)", "tags": ["session-auth"],
                    "security": cookie,
                    "responses": guarded(map(json!({"200": {"description": "the users",
                        "content": {"application/json": {"schema": {"type": "array",
                            "items": schema_ref("SessionAuthUser")}}}}})))},
                "post": {"summary": "Create a user (administrators)", "tags": ["session-auth"],
                    "security": cookie,
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": schema_ref("SessionAuthUserCreate")}}},
                    "responses": guarded(map(json!({
                        "201": respond("created", "SessionAuthUser"),
                        "400": err("Wrong format, email missing, password missing, or Can't create User: ..."),
                        "413": err("body too large")
                    })))}
            }),
        ),
        ("/api/v1/users/{user_id}", one_user),
        (
            "/api/v1/auth_session/login",
            json!({"post": {
            "summary": "Log in: the user, and the session cookie",
            "tags": ["session-auth"],
            "requestBody": {"required": true, "content": {
                "application/x-www-form-urlencoded": {"schema": schema_ref("SessionAuthLogin")},
                "multipart/form-data": {"schema": schema_ref("SessionAuthLogin")}}},
            "responses": {
                "200": {"description": "logged in",
                    "headers": {"Set-Cookie": {"description": "`_my_session_id=<session id>; Path=/; HttpOnly; SameSite=Lax` (+ `Secure` in production)",
                        "schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": schema_ref("SessionAuthUser")}}},
                "400": err("email missing / password missing"),
                "401": err("wrong password"),
                "404": err("no user found for this email"),
                "413": err("body too large"),
                "429": {"description": "too many login attempts for this email",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": schema_ref("SessionAuthError")}}},
                "503": err("the session store is unreachable")
            }}}),
        ),
        (
            "/api/v1/auth_session/logout",
            json!({"delete": {
            "summary": "Log out: end the cookie's session",
            "tags": ["session-auth"], "security": cookie,
            "responses": {
                "200": respond("logged out", "SessionAuthEmpty"),
                "404": respond("no live session", "SessionAuthEmpty"),
                "503": err("the session store is unreachable")
            }}}),
        ),
    ];
    let mut paths = Map::new();
    for (path, item) in items {
        paths.insert(format!("{path}/"), item.clone());
        paths.insert(path.to_owned(), item);
    }
    let user_props = json!({
        "id": {"type": "string"},
        "email": {"type": "string"},
        "first_name": {"type": "string", "nullable": true},
        "last_name": {"type": "string", "nullable": true},
        "created_at": {"type": "string", "description": "%Y-%m-%dT%H:%M:%S (UTC)"},
        "updated_at": {"type": "string", "description": "%Y-%m-%dT%H:%M:%S (UTC)"}
    });
    (
        JsonValue::Object(paths),
        json!({
            "SessionAuthUser": {
                "type": "object",
                "required": ["id", "email", "first_name", "last_name", "created_at", "updated_at"],
                "properties": user_props
            },
            "SessionAuthUserCreate": {
                "type": "object",
                "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "maxLength": 254,
                        "pattern": "^[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+$"},
                    "password": {"type": "string", "minLength": 1, "maxLength": 256},
                    "first_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "last_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "is_admin": {"type": "boolean", "nullable": true}
                }
            },
            "SessionAuthUserUpdate": {
                "type": "object",
                "properties": {
                    "first_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "last_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS}
                }
            },
            "SessionAuthLogin": {
                "type": "object",
                "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "minLength": 1},
                    "password": {"type": "string", "minLength": 1}
                }
            },
            "SessionAuthStatus": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["OK"]}}
            },
            "SessionAuthStats": {
                "type": "object", "required": ["users"],
                "properties": {"users": {"type": "integer", "minimum": 0}}
            },
            "SessionAuthEmpty": {"type": "object", "maxProperties": 0},
            "SessionAuthError": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}
            }
        }),
    )
}
