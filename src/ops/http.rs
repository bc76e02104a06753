//! The HTTP endpoint: `/health` (alive), `/ready` (pipelines running and connected),
//! `/metrics` (Prometheus text format).

use std::net::SocketAddr;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::health::Readiness;
use super::metrics::Metrics;

struct State {
    readiness: Readiness,
    metrics: Metrics,
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

async fn render_metrics(state: web::Data<State>) -> HttpResponse {
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(e) => HttpResponse::InternalServerError().body(format!("encoding metrics: {e}\n")),
    }
}

/// Binds `address` and returns the server; the caller spawns it and stops it on shutdown.
/// Signals are left to the daemon, which shuts the server down after the pipelines.
pub fn serve(
    address: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
) -> std::io::Result<Server> {
    let state = web::Data::new(State { readiness, metrics });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(1)
    .disable_signals()
    .bind(address)?
    .run())
}
