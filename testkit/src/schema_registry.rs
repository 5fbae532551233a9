//! [`StandInSchemaRegistry`]: an in-process HTTP server implementing only
//! the documented subset of the Confluent schema registry REST API that
//! the `schema-registry` crate calls.
//!
//! **Why a stand-in.** No Confluent-compatible registry server can be
//! installed where these tests run (it is a JVM service outside the
//! registries this project builds from). So the client is written against
//! the REST API as documented, and tested against this server, which
//! implements exactly that subset and nothing more. It is not a registry:
//! one process, memory only, Avro only, one compatibility level.
//!
//! | call | answer |
//! |---|---|
//! | `POST /subjects/{subject}/versions` `{"schema"}` | `{"id"}`; the same id for a schema the subject already has (by Avro canonical form), and one global id per distinct schema across subjects; `409`/`409` if not BACKWARD compatible with the latest version; `422`/`42201` for an invalid schema |
//! | `GET /schemas/ids/{id}` | `{"schema"}`; `404`/`40403` |
//! | `GET /subjects/{subject}/versions/{n\|latest}` | `{"subject","id","version","schema"}`; `404`/`40401`, `404`/`40402`; `422`/`42202` for a bad version |
//! | `POST /compatibility/subjects/{subject}/versions/{n\|latest}` `{"schema"}` | `{"is_compatible"}` under BACKWARD (the new schema reads data written with that version: apache-avro's `SchemaCompatibility::can_read`); `40401`, `40402`, `42201` |
//! | anything else | `404`/`404` |
//!
//! Errors are `{"error_code", "message"}` bodies, every answer is
//! `application/vnd.schemaregistry.v1+json`, and a request body with
//! another content type than that, `application/vnd.schemaregistry+json` or
//! `application/json` is refused with `415`, as the registry does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};

const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// A stand-in for a Confluent schema registry (see the module doc): a
/// server on `127.0.0.1:<free port>`, stopped when dropped.
#[derive(Debug)]
pub struct StandInSchemaRegistry {
    url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Global ids: id - 1 indexes this (text as first registered, canonical form).
    schemas: Vec<(String, String)>,
    /// Subject → the ids of its versions, version n at index n - 1.
    subjects: HashMap<String, Vec<u32>>,
    /// Requests served, by `METHOD path-pattern`.
    requests: Vec<String>,
}

impl StandInSchemaRegistry {
    /// Start one on a free local port (needs a tokio runtime with I/O).
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start() -> StandInSchemaRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port for the stand-in registry");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let served = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StandInSchemaRegistry { url, state, server }
    }

    /// `http://127.0.0.1:<port>`: the `schema.registry.url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The requests served so far, as `METHOD /path` (to check caching).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Register `schema` under `subject` directly (as another producer
    /// would), returning its id.
    ///
    /// # Panics
    /// When the schema is invalid or incompatible.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut state = self.lock();
        match state.register(subject, schema) {
            Ok(id) => id,
            Err((_, body)) => panic!("stand-in registry refused {subject}: {body}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for StandInSchemaRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Answer = (StatusCode, Json);

fn error(status: StatusCode, code: i32, message: impl Into<String>) -> Answer {
    (
        status,
        json!({ "error_code": code, "message": message.into() }),
    )
}

fn parse(schema: &str) -> Result<Schema, Answer> {
    Schema::parse_str(schema).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {e}"),
        )
    })
}

impl State {
    fn register(&mut self, subject: &str, text: &str) -> Result<u32, Answer> {
        let schema = parse(text)?;
        let canonical = schema.canonical_form();
        let versions = self.subjects.get(subject).cloned().unwrap_or_default();
        if let Some(&id) = versions
            .iter()
            .find(|&&id| self.schemas[id as usize - 1].1 == canonical)
        {
            return Ok(id);
        }
        if let Some(&latest) = versions.last() {
            let (old, _) = &self.schemas[latest as usize - 1];
            if !backward(old, &schema) {
                return Err(error(
                    StatusCode::CONFLICT,
                    409,
                    format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\""
                    ),
                ));
            }
        }
        let id = match self.schemas.iter().position(|(_, c)| *c == canonical) {
            Some(i) => i as u32 + 1,
            None => {
                self.schemas.push((text.to_string(), canonical));
                self.schemas.len() as u32
            }
        };
        self.subjects
            .entry(subject.to_string())
            .or_default()
            .push(id);
        Ok(id)
    }

    /// (version number, id) of `subject`'s `version` (`latest` or a number).
    fn version(&self, subject: &str, version: &str) -> Result<(usize, u32), Answer> {
        let Some(versions) = self.subjects.get(subject) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                40401,
                format!("Subject '{subject}' not found."),
            ));
        };
        let n = if version == "latest" {
            versions.len()
        } else {
            match version.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        42202,
                        format!(
                            "The specified version '{version}' is not a valid version id. \
                             Allowed values are between [1, 2^31-1] and the string \"latest\""
                        ),
                    ))
                }
            }
        };
        match versions.get(n.wrapping_sub(1)) {
            Some(&id) => Ok((n, id)),
            None => Err(error(
                StatusCode::NOT_FOUND,
                40402,
                format!("Version {version} not found."),
            )),
        }
    }
}

/// BACKWARD: `new` can read what `old` wrote.
fn backward(old: &str, new: &Schema) -> bool {
    Schema::parse_str(old)
        .map(|old| SchemaCompatibility::can_read(&old, new).is_ok())
        .unwrap_or(false)
}

fn schema_field(body: &[u8]) -> Result<String, Answer> {
    let v: Json = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid request body: {e}"),
        )
    })?;
    if let Some(t) = v.get("schemaType").and_then(Json::as_str) {
        if t != "AVRO" {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("Invalid schema type {t}: the stand-in speaks Avro only"),
            ));
        }
    }
    v.get("schema")
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "No schema given"))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let type_ok = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            [
                CONTENT_TYPE_V1,
                "application/vnd.schemaregistry+json",
                "application/json",
            ]
            .contains(&t)
        });
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let segments: Vec<Option<String>> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments
        .iter()
        .map(|s| s.as_deref().unwrap_or("\u{0}"))
        .collect();
    let (status, json) = {
        let mut st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.requests.push(format!("{method} {path}"));
        if method == Method::POST && !type_ok {
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                415,
                "HTTP 415 Unsupported Media Type",
            )
        } else {
            route(&mut st, &method, &segments, &body).unwrap_or_else(|e| e)
        }
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE_V1)
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("a valid response")
}

fn route(st: &mut State, method: &Method, seg: &[&str], body: &[u8]) -> Result<Answer, Answer> {
    let ok = |j: Json| Ok((StatusCode::OK, j));
    match (method, seg) {
        (&Method::POST, ["subjects", subject, "versions"]) => {
            let schema = schema_field(body)?;
            ok(json!({ "id": st.register(subject, &schema)? }))
        }
        (&Method::GET, ["schemas", "ids", id]) => {
            let found = id
                .parse::<usize>()
                .ok()
                .and_then(|i| st.schemas.get(i.wrapping_sub(1)));
            match found {
                Some((text, _)) => ok(json!({ "schema": text })),
                None => Err(error(
                    StatusCode::NOT_FOUND,
                    40403,
                    format!("Schema {id} not found"),
                )),
            }
        }
        (&Method::GET, ["subjects", subject, "versions", version]) => {
            let (n, id) = st.version(subject, version)?;
            ok(json!({
                "subject": subject,
                "id": id,
                "version": n,
                "schema": st.schemas[id as usize - 1].0,
            }))
        }
        (&Method::POST, ["compatibility", "subjects", subject, "versions", version]) => {
            let (_, id) = st.version(subject, version)?;
            let new = parse(&schema_field(body)?)?;
            ok(json!({ "is_compatible": backward(&st.schemas[id as usize - 1].0, &new) }))
        }
        _ => Err(error(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")),
    }
}
