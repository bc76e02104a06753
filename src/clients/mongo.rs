//! The MongoDB client: one per pipeline, built from `[mongodb]`.

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, ServerApi, ServerApiVersion};
use mongodb::Client;

use super::error::ClientError;
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
/// the server answers. What the connection string says (`compressors`, TLS, authentication)
/// the driver reads from it; the typed settings of `[mongodb]` are applied on top.
pub async fn connect(mongo: &MongoConfig) -> Result<Client, ClientError> {
    let mut options = ClientOptions::parse(&mongo.uri)
        .await
        .map_err(error(mongo, "parsing the connection string"))?;
    apply(&mut options, mongo);
    Client::with_options(options).map_err(error(mongo, "creating the client"))
}

/// The typed settings of `[mongodb]` over the options the connection string gave.
fn apply(options: &mut ClientOptions, mongo: &MongoConfig) {
    options.app_name = Some(mongo.app_name.clone());
    options.connect_timeout = Some(mongo.connect_timeout);
    options.server_selection_timeout = Some(mongo.connect_timeout);
    // Validation admits only version "1".
    if mongo.server_api_version.is_some() {
        options.server_api = Some(
            ServerApi::builder()
                .version(ServerApiVersion::V1)
                .strict(mongo.server_api_strict)
                .deprecation_errors(mongo.server_api_deprecation_errors)
                .build(),
        );
    }
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

#[cfg(test)]
mod tests {
    use mongodb::options::Compressor;

    use super::*;

    fn mongo(extra: &str) -> MongoConfig {
        toml::from_str(&format!("uri = \"mongodb://127.0.0.1:27017\"\n{extra}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn the_stable_api_is_declared_when_configured() {
        let config = mongo("server_api_version = \"1\"\nserver_api_strict = true");
        let mut options = ClientOptions::parse(&config.uri).await.expect("uri");
        apply(&mut options, &config);
        let api = options.server_api.expect("a server API");
        assert_eq!(api.version, ServerApiVersion::V1);
        assert_eq!(api.strict, Some(true));
        assert_eq!(api.deprecation_errors, Some(false));

        let config = mongo("");
        let mut options = ClientOptions::parse(&config.uri).await.expect("uri");
        apply(&mut options, &config);
        assert!(options.server_api.is_none());
    }

    #[tokio::test]
    async fn every_wire_compressor_of_the_uri_is_built_in() {
        // Without the driver's compression features these are refused at parse time.
        let options = ClientOptions::parse(
            "mongodb://127.0.0.1:27017/?compressors=zstd,snappy,zlib&zlibCompressionLevel=6",
        )
        .await
        .expect("compressors are known to the driver");
        let compressors = options.compressors.expect("compressors");
        assert_eq!(compressors.len(), 3, "{compressors:?}");
        assert!(matches!(compressors[0], Compressor::Zstd { .. }));
        assert!(matches!(compressors[1], Compressor::Snappy));
        assert!(matches!(
            compressors[2],
            Compressor::Zlib { level: Some(6) }
        ));
    }
}
