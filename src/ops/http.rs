//! The HTTP endpoint: `/health` (alive), `/ready` (pipelines running and connected),
//! `/metrics` (Prometheus text format), `/status` (what each pipeline is doing, as JSON).

use std::net::SocketAddr;

use actix_web::dev::Server;
use actix_web::{guard, web, App, HttpResponse, HttpServer, Resource, Route};

use super::health::Readiness;
use super::metrics::Metrics;
use super::status::StatusBoard;

struct State {
    readiness: Readiness,
    metrics: Metrics,
    status: StatusBoard,
}

/// What the endpoint reports from.
pub struct Reporters {
    /// For `/ready`.
    pub readiness: Readiness,
    /// For `/metrics`.
    pub metrics: Metrics,
    /// For `/status`.
    pub status: StatusBoard,
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

/// A path whose `route` answers GET and HEAD (the same response, which actix-web sends
/// without its body) and that refuses any other method with 405 and `Allow: GET, HEAD`.
/// Unknown paths get 404.
fn read_only(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route.guard(guard::Any(guard::Get()).or(guard::Head())))
        .default_service(web::to(|| async {
            HttpResponse::MethodNotAllowed()
                .insert_header((actix_web::http::header::ALLOW, "GET, HEAD"))
                .finish()
        }))
}

/// Binds `address` and returns the server; the caller spawns it and stops it on shutdown.
/// Signals are left to the daemon, which shuts the server down after the pipelines.
pub fn serve(address: SocketAddr, reporters: Reporters) -> std::io::Result<Server> {
    let Reporters {
        readiness,
        metrics,
        status,
    } = reporters;
    let state = web::Data::new(State {
        readiness,
        metrics,
        status,
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(read_only("/health", web::route().to(health)))
            .service(read_only("/ready", web::route().to(ready)))
            .service(read_only("/metrics", web::route().to(render_metrics)))
            .service(read_only("/status", web::route().to(render_status)))
    })
    .workers(1)
    .disable_signals()
    .bind(address)?
    .run())
}
