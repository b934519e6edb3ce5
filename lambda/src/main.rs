//! The compactor Lambda's entry point: initialise tracing, build the S3
//! client and configuration once, and hand the handler to the runtime. The
//! handler itself is [`distributary_lambda::handle`].

use distributary_lambda::{Compactor, Event, handle};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISTRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // JSON lines without ANSI colours or timestamps: CloudWatch adds its own.
    tracing_subscriber::fmt().with_env_filter(filter).json().without_time().with_writer(std::io::stderr).init();
    let compactor = Compactor::from_env().await?;
    let compactor = &compactor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        // Boxed, the error keeps its whole message for the failure destination.
        handle(compactor, event).await.map_err(Error::from)
    }))
    .await
}
