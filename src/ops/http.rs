//! The HTTP endpoint: `/health` (alive), `/ready` (pipelines running and connected),
//! `/metrics` (Prometheus text format), `/status` (what each pipeline is doing, as JSON),
//! and the control of pipelines: `GET /pipelines`, `GET /pipelines/<name>`,
//! `POST /pipelines/<name>/pause|resume|restart` (see `ops::control`), and
//! `POST|DELETE /pipelines/<name>/snapshot` (a source's snapshots on demand).
//!
//! With a token (`http.token_file` or `MKB_HTTP_TOKEN`) the control paths answer only
//! requests with `Authorization: Bearer <token>`. Without one they answer only on a loopback
//! address: listening beyond it (a container's `0.0.0.0`, for its probes and Prometheus)
//! without a token leaves them disabled (403, and a WARN at start) rather than open to the
//! network or refusing to start. `/health`, `/ready`, `/metrics` and `/status` stay open.

use std::net::SocketAddr;
use std::time::Duration;

use actix::Recipient;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{guard, web, App, HttpRequest, HttpResponse, HttpServer, Resource, Route};
use subtle::ConstantTimeEq;

use super::control::{
    Command, Control, ControlError, PipelineBoard, PipelineReport, SnapshotCommand,
    SnapshotControl, SnapshotRequest,
};
use super::health::Readiness;
use super::metrics::Metrics;
use super::status::StatusBoard;

struct State {
    readiness: Readiness,
    metrics: Metrics,
    status: StatusBoard,
    board: PipelineBoard,
    control: Option<Recipient<Control>>,
    snapshots: Option<Recipient<SnapshotControl>>,
    token: Option<String>,
    /// Beyond loopback without a token: the control paths answer 403.
    disabled: bool,
    deadline: Duration,
}

/// What the endpoint reports from, and where it sends commands.
pub struct Reporters {
    /// For `/ready`.
    pub readiness: Readiness,
    /// For `/metrics`.
    pub metrics: Metrics,
    /// For `/status` (and each pipeline's `status` on `/pipelines`).
    pub status: StatusBoard,
    /// For `/pipelines`.
    pub board: PipelineBoard,
    /// The root supervisor, which carries out `POST /pipelines/<name>/<command>`.
    pub control: Option<Recipient<Control>>,
    /// The root supervisor, which hands `POST|DELETE /pipelines/<name>/snapshot` on.
    pub snapshots: Option<Recipient<SnapshotControl>>,
    /// The bearer token the control paths require, if any.
    pub token: Option<String>,
    /// How long a command may take before the answer is 503 (a supervisor that does not
    /// answer, a pause that does not finish).
    pub deadline: Duration,
}

/// Whether `authorization` (the header's value) carries `token`, compared in constant time;
/// always when no token is set.
pub fn authorized(token: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    // The scheme is case-insensitive (RFC 9110).
    let Some(given) = authorization
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, given)| given.trim())
    else {
        return false;
    };
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn json_error(mut response: actix_web::HttpResponseBuilder, message: &str) -> HttpResponse {
    response
        .content_type("application/json")
        .body(serde_json::json!({ "error": message }).to_string())
}

/// Why the control paths answer 403.
const DISABLED: &str = "the control endpoints are disabled: the HTTP endpoint listens beyond loopback without a token; give one with `http.token_file` or MKB_HTTP_TOKEN";

/// `None` when the request may use the control paths, else the 401 (or 403) answer.
fn refused(state: &State, request: &HttpRequest) -> Option<HttpResponse> {
    if state.disabled {
        return Some(json_error(HttpResponse::Forbidden(), DISABLED));
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorized(state.token.as_deref(), given) {
        return None;
    }
    let mut response = HttpResponse::Unauthorized();
    response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    Some(json_error(
        response,
        "the control endpoints need `Authorization: Bearer <token>` with the token of `http.token_file` or MKB_HTTP_TOKEN",
    ))
}

fn report_json(state: &State, name: &str, report: &PipelineReport) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("name".to_owned(), serde_json::json!(name));
        map.insert("status".to_owned(), state.status.pipeline_json(name));
    }
    value
}

fn not_found(name: &str) -> HttpResponse {
    json_error(
        HttpResponse::NotFound(),
        &ControlError::NotFound(name.to_owned()).to_string(),
    )
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn ready(state: web::Data<State>) -> HttpResponse {
    match state.readiness.status() {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {reason}\n")),
    }
}

async fn render_status(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.status.to_json().to_string())
}

async fn render_metrics(state: web::Data<State>) -> HttpResponse {
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(e) => HttpResponse::InternalServerError().body(format!("encoding metrics: {e}\n")),
    }
}

async fn list_pipelines(state: web::Data<State>, request: HttpRequest) -> HttpResponse {
    if let Some(refused) = refused(&state, &request) {
        return refused;
    }
    let pipelines: serde_json::Map<String, serde_json::Value> = state
        .board
        .all()
        .iter()
        .map(|(name, report)| (name.clone(), report_json(&state, name, report)))
        .collect();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(serde_json::json!({ "pipelines": pipelines }).to_string())
}

async fn show_pipeline(
    state: web::Data<State>,
    request: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = refused(&state, &request) {
        return refused;
    }
    match state.board.get(&name) {
        Some(report) => HttpResponse::Ok()
            .content_type("application/json")
            .body(report_json(&state, &name, &report).to_string()),
        None => not_found(&name),
    }
}

async fn command_pipeline(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    if let Some(refused) = refused(&state, &request) {
        return refused;
    }
    let (name, command) = path.into_inner();
    let Some(command) = Command::parse(&command) else {
        return json_error(
            HttpResponse::NotFound(),
            &format!("no command `{command}`: POST /pipelines/{name}/pause, /resume or /restart"),
        );
    };
    let Some(control) = &state.control else {
        return json_error(
            HttpResponse::ServiceUnavailable(),
            "the daemon takes no commands (no supervisor)",
        );
    };
    let sent = control.send(Control {
        pipeline: name.clone(),
        command,
    });
    let late = format!(
        "the command may still take effect; GET /pipelines/{name} shows the pipeline's state"
    );
    let answer = within_deadline(&state, sent, &late).await;
    respond(&state, &name, answer, HttpResponse::Ok())
}

/// The supervisor's answer to a command, or why there is none: it did not take the command,
/// or did not answer within the deadline (`late` says what to look at then).
async fn within_deadline(
    state: &State,
    sent: impl std::future::Future<
        Output = Result<Result<PipelineReport, ControlError>, actix::MailboxError>,
    >,
    late: &str,
) -> Result<PipelineReport, ControlError> {
    match tokio::time::timeout(state.deadline, sent).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => Err(ControlError::Unavailable(format!(
            "the supervisor did not take the command: {error}"
        ))),
        Err(_) => Err(ControlError::Unavailable(format!(
            "no answer within {:?}: {late}",
            state.deadline
        ))),
    }
}

/// A command's answer as HTTP: `ok` with the pipeline's report, else 404, 409 or 503 with
/// the reason.
fn respond(
    state: &State,
    name: &str,
    answer: Result<PipelineReport, ControlError>,
    mut ok: actix_web::HttpResponseBuilder,
) -> HttpResponse {
    match answer {
        Ok(report) => ok
            .content_type("application/json")
            .body(report_json(state, name, &report).to_string()),
        Err(error @ ControlError::NotFound(_)) => {
            json_error(HttpResponse::NotFound(), &error.to_string())
        }
        Err(error @ ControlError::Conflict(_)) => {
            json_error(HttpResponse::Conflict(), &error.to_string())
        }
        Err(error @ ControlError::Unavailable(_)) => {
            json_error(HttpResponse::ServiceUnavailable(), &error.to_string())
        }
    }
}

/// The body of `POST /pipelines/<name>/snapshot`: `{"namespaces": ["db.coll"], "filter":
/// {...}}`, the filter in (relaxed or canonical) extended JSON.
fn snapshot_request(body: &[u8]) -> Result<SnapshotRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("the body is not a JSON object".to_owned());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "namespaces" | "filter"))
    {
        return Err(format!(
            "unknown field `{unknown}`: the body has `namespaces` and `filter`"
        ));
    }
    let namespaces = object
        .get("namespaces")
        .and_then(serde_json::Value::as_array)
        .ok_or("`namespaces` must be an array of `db.coll` strings")?
        .iter()
        .map(|n| n.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or("`namespaces` must be an array of `db.coll` strings")?;
    let filter = match object.get("filter") {
        None | Some(serde_json::Value::Null) => None,
        Some(filter) => match bson::Bson::try_from(filter.clone()) {
            Ok(bson::Bson::Document(filter)) => Some(filter),
            _ => return Err("`filter` must be a JSON object (a MongoDB query)".to_owned()),
        },
    };
    Ok(SnapshotRequest { namespaces, filter })
}

/// `POST /pipelines/<name>/snapshot` (start one) and `DELETE` (cancel every one).
async fn snapshot_pipeline(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = refused(&state, &request) {
        return refused;
    }
    let name = path.into_inner();
    let command = if request.method() == actix_web::http::Method::DELETE {
        SnapshotCommand::Cancel
    } else {
        match snapshot_request(&body) {
            Ok(request) => SnapshotCommand::Start(request),
            Err(reason) => return json_error(HttpResponse::BadRequest(), &reason),
        }
    };
    let Some(snapshots) = &state.snapshots else {
        return json_error(
            HttpResponse::ServiceUnavailable(),
            "the daemon takes no commands (no supervisor)",
        );
    };
    let sent = snapshots.send(SnapshotControl {
        pipeline: name.clone(),
        command,
    });
    let answer = within_deadline(&state, sent, "GET /status shows the pipeline's snapshots").await;
    respond(&state, &name, answer, HttpResponse::Accepted())
}

/// A path whose `route` answers GET and HEAD (the same response, which actix-web sends
/// without its body) and that refuses any other method with 405 and `Allow: GET, HEAD`.
/// Unknown paths get 404.
fn read_only(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route.guard(guard::Any(guard::Get()).or(guard::Head())))
        .default_service(web::to(|| async {
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "GET, HEAD"))
                .finish()
        }))
}

/// A path whose `route` answers POST only; other methods get 405 and `Allow: POST`.
fn post_only(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route.guard(guard::Post()))
        .default_service(web::to(|| async {
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .finish()
        }))
}

/// Every path the endpoint serves.
fn routes(config: &mut web::ServiceConfig) {
    config
        .service(read_only("/health", web::route().to(health)))
        .service(read_only("/ready", web::route().to(ready)))
        .service(read_only("/metrics", web::route().to(render_metrics)))
        .service(read_only("/status", web::route().to(render_status)))
        .service(read_only("/pipelines", web::route().to(list_pipelines)))
        .service(read_only(
            "/pipelines/{name}",
            web::route().to(show_pipeline),
        ))
        .service(
            web::resource("/pipelines/{name}/snapshot")
                .route(web::post().to(snapshot_pipeline))
                .route(web::delete().to(snapshot_pipeline))
                .default_service(web::to(|| async {
                    HttpResponse::MethodNotAllowed()
                        .insert_header((header::ALLOW, "POST, DELETE"))
                        .finish()
                })),
        )
        .service(post_only(
            "/pipelines/{name}/{command}",
            web::route().to(command_pipeline),
        ));
}

/// Binds `address` and returns the server; the caller spawns it and stops it on shutdown.
/// Signals are left to the daemon, which shuts the server down after the pipelines.
pub fn serve(address: SocketAddr, reporters: Reporters) -> std::io::Result<Server> {
    let Reporters {
        readiness,
        metrics,
        status,
        board,
        control,
        snapshots,
        token,
        deadline,
    } = reporters;
    let disabled = token.is_none() && !address.ip().is_loopback();
    if disabled {
        tracing::warn!(%address, "{DISABLED}");
    }
    let state = web::Data::new(State {
        readiness,
        metrics,
        status,
        board,
        control,
        snapshots,
        token,
        disabled,
        deadline,
    });
    Ok(
        HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .bind(address)?
            .run(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_snapshot_body_names_namespaces_and_an_optional_extended_json_filter() {
        let request = super::snapshot_request(
            br#"{"namespaces": ["d.a"], "filter": {"at": {"$gt": {"$date": "2024-01-01T00:00:00Z"}}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.namespaces, ["d.a"]);
        let filter = request.filter.unwrap_or_default();
        assert!(
            filter
                .get_document("at")
                .and_then(|at| at.get_datetime("$gt"))
                .is_ok(),
            "{filter}"
        );
        for (body, says) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"namespace": ["d.a"]}"#, "unknown field `namespace`"),
            (br#"{"namespaces": "d.a"}"#, "`namespaces` must be an array"),
            (
                br#"{"namespaces": ["d.a"], "filter": 3}"#,
                "`filter` must be a JSON object",
            ),
        ] {
            let error = super::snapshot_request(body).expect_err("refused");
            assert!(error.contains(says), "{error}");
        }
    }

    use super::*;

    #[test]
    fn the_control_paths_need_the_bearer_token_when_one_is_set() {
        assert!(authorized(None, None), "no token set: open");
        assert!(authorized(None, Some("Bearer anything")));
        let token = Some("s3cret-token");
        assert!(authorized(token, Some("Bearer s3cret-token")));
        assert!(!authorized(token, None));
        assert!(!authorized(token, Some("Bearer s3cret-toke")));
        assert!(!authorized(token, Some("Bearer s3cret-token2")));
        assert!(!authorized(token, Some("Basic s3cret-token")));
        assert!(!authorized(token, Some("s3cret-token")));
        assert!(!authorized(token, Some("Bearer ")));
        assert!(
            authorized(token, Some("bearer s3cret-token")),
            "the scheme's case"
        );
    }

    /// A supervisor that never answers.
    struct Stuck;

    impl actix::Actor for Stuck {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<Control> for Stuck {
        type Result = actix::ResponseFuture<Result<PipelineReport, ControlError>>;

        fn handle(&mut self, _: Control, _: &mut Self::Context) -> Self::Result {
            Box::pin(std::future::pending())
        }
    }

    /// A supervisor refusing every command as the state rules do a failed pipeline's.
    struct Refusing;

    impl actix::Actor for Refusing {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<Control> for Refusing {
        type Result = Result<PipelineReport, ControlError>;

        fn handle(&mut self, msg: Control, _: &mut Self::Context) -> Self::Result {
            Err(ControlError::Conflict(format!(
                "pipeline `{}` failed",
                msg.pipeline
            )))
        }
    }

    /// How the endpoint under test guards its control paths.
    #[derive(Clone, Copy)]
    enum Guard<'a> {
        Open,
        Token(&'a str),
        /// Beyond loopback without a token.
        Disabled,
    }

    async fn post(
        control: Recipient<Control>,
        guard: Guard<'_>,
        path: &str,
        auth: Option<&str>,
    ) -> (u16, String) {
        use actix_web::test;
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let board = PipelineBoard::default();
        board.register("p", super::super::control::Kind::Sink);
        let state = web::Data::new(State {
            readiness: Readiness::default(),
            metrics,
            status: StatusBoard::default(),
            board,
            control: Some(control),
            snapshots: None,
            disabled: matches!(guard, Guard::Disabled),
            token: match guard {
                Guard::Token(token) => Some(token.to_owned()),
                Guard::Open | Guard::Disabled => None,
            },
            deadline: Duration::from_millis(300),
        });
        let app = test::init_service(App::new().app_data(state).configure(routes)).await;
        let mut request = test::TestRequest::post().uri(path);
        if let Some(auth) = auth {
            request = request.insert_header((header::AUTHORIZATION, auth));
        }
        let response = test::call_service(&app, request.to_request()).await;
        let status = response.status().as_u16();
        let body = test::read_body(response).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A supervisor that does not answer gets a 503 with the reason within the deadline,
    /// never a hang; a refusal is 409, a missing token 401, and beyond loopback without a
    /// token the control paths are disabled: 403.
    #[actix_web::test]
    async fn commands_answer_503_when_the_supervisor_does_not_and_409_when_refused() {
        use actix::Actor;
        let began = std::time::Instant::now();
        let (status, body) = post(
            Stuck.start().recipient(),
            Guard::Open,
            "/pipelines/p/pause",
            None,
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no answer within 300ms"), "{body}");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );

        let (status, body) = post(
            Refusing.start().recipient(),
            Guard::Open,
            "/pipelines/p/resume",
            None,
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("pipeline `p` failed"), "{body}");

        let refusing = Refusing.start().recipient();
        let (status, body) = post(
            refusing.clone(),
            Guard::Token("t"),
            "/pipelines/p/restart",
            None,
        )
        .await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = post(
            refusing.clone(),
            Guard::Disabled,
            "/pipelines/p/restart",
            Some("Bearer t"),
        )
        .await;
        assert_eq!(status, 403, "beyond loopback without a token: {body}");
        assert!(body.contains("MKB_HTTP_TOKEN"), "{body}");
        let (status, _) = post(
            refusing,
            Guard::Token("t"),
            "/pipelines/p/restart",
            Some("Bearer t"),
        )
        .await;
        assert_eq!(status, 409, "authorised, then refused by the supervisor");
    }
}
