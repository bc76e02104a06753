//! The MongoDB client: one per pipeline, built from `[mongodb]`.

use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::Client;

use super::ClientError;
use crate::config::MongoConfig;

/// The hosts of the connection string, for messages (never the credentials).
pub fn hosts(mongo: &MongoConfig) -> String {
    let rest = mongo
        .uri
        .split_once("://")
        .map_or(mongo.uri.as_str(), |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts)
        .to_owned()
}

fn error<'a>(
    mongo: &'a MongoConfig,
    what: &'static str,
) -> impl FnOnce(mongodb::error::Error) -> ClientError + 'a {
    move |source| ClientError::Mongo {
        hosts: hosts(mongo),
        what,
        source: Box::new(source),
    }
}

/// Builds a client. Connections are opened lazily by the driver; call [`ping`] to know
/// the server answers.
pub async fn connect(mongo: &MongoConfig) -> Result<Client, ClientError> {
    let mut options = ClientOptions::parse(&mongo.uri)
        .await
        .map_err(error(mongo, "parsing the connection string"))?;
    options.app_name = Some(mongo.app_name.clone());
    options.connect_timeout = Some(mongo.connect_timeout);
    options.server_selection_timeout = Some(mongo.connect_timeout);
    Client::with_options(options).map_err(error(mongo, "creating the client"))
}

/// Runs `ping` against the `admin` database.
pub async fn ping(client: &Client, mongo: &MongoConfig) -> Result<(), ClientError> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(error(mongo, "running ping"))
}
