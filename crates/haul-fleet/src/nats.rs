//! [`Queue`] on NATS JetStream.
//!
//! - `HAUL_UNITS`: a work-queue stream, subject `haul.units.<job>`, each
//!   unit published with `Nats-Msg-Id` = `<job>/<unit>` (a re-publish in
//!   the duplicate window is dropped); one durable pull consumer per job
//!   (`units-<job>`, explicit acks, `ack_wait`, `max_deliver`) shared by
//!   every worker, so each unit goes to one worker at a time.
//! - `HAUL_RESULTS`: subject `haul.results.<job>`, kept (limits retention,
//!   7 days); the coordinator reads it with an ordered consumer from the
//!   start, so a restarted coordinator sees every result again.
//! - `HAUL_JOBS`: a KV bucket, one entry per job (spec, units, phase),
//!   changed only by compare-and-swap on its revision.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::error::{FleetError, Result};
use crate::queue::{Delivery, Queue};
use crate::record::{check_job_id, from_json, to_json, JobRecord, ResultMsg, UnitMsg};

const UNITS: &str = "HAUL_UNITS";
const RESULTS: &str = "HAUL_RESULTS";
const JOBS: &str = "HAUL_JOBS";

/// How units are leased.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// A unit not acknowledged (nor kept alive) for this long goes to
    /// another worker.
    pub ack_wait: Duration,
    /// Deliveries of a unit before it is given up (a dead letter).
    pub max_deliver: i64,
    /// How long to wait for the server when connecting.
    pub connect_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection to a NATS server with JetStream.
pub struct NatsQueue {
    url: String,
    js: jetstream::Context,
    kv: kv::Store,
    units: stream::Stream,
    results: stream::Stream,
    opts: NatsOptions,
    consumers: Mutex<HashMap<String, consumer::PullConsumer>>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl NatsQueue {
    /// Connects and makes sure the streams and the KV bucket exist.
    pub async fn connect(url: &str, opts: NatsOptions) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| FleetError::queue(url, e);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(opts.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(url)
            .await
            .map_err(|e| err(&e))?;
        // The first request proves the server answers (a connection that
        // retries forever would otherwise hang here).
        let js = jetstream::new(client);
        let units = tokio::time::timeout(
            opts.connect_timeout,
            js.get_or_create_stream(stream::Config {
                name: UNITS.into(),
                subjects: vec!["haul.units.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(3600),
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| err(&"no answer from the server (is it running, with JetStream enabled?)"))?
        .map_err(|e| err(&e))?;
        let results = js
            .get_or_create_stream(stream::Config {
                name: RESULTS.into(),
                subjects: vec!["haul.results.>".into()],
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let kv = match js.get_key_value(JOBS).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: JOBS.into(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| err(&e))?,
        };
        Ok(NatsQueue {
            url: url.to_string(),
            js,
            kv,
            units,
            results,
            opts,
            consumers: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> FleetError {
        FleetError::queue(&self.url, e)
    }

    async fn consumer(&self, job: &str) -> Result<consumer::PullConsumer> {
        check_job_id(job)?;
        let mut cache = self.consumers.lock().await;
        if let Some(c) = cache.get(job) {
            return Ok(c.clone());
        }
        let name = format!("units-{job}");
        let c = self
            .units
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("haul.units.{job}"),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.opts.ack_wait,
                    max_deliver: self.opts.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(e))?;
        cache.insert(job.to_string(), c.clone());
        Ok(c)
    }
}

struct NatsDelivery {
    msg: jetstream::Message,
    unit: UnitMsg,
    delivered: u64,
    last: bool,
    url: String,
}

#[async_trait]
impl Delivery for NatsDelivery {
    fn unit(&self) -> &UnitMsg {
        &self.unit
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn is_last(&self) -> bool {
        self.last
    }
    async fn progress(&self) -> Result<()> {
        self.msg
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| FleetError::queue(&self.url, e))
    }
    async fn ack(&self) -> Result<()> {
        // Acknowledged only when the server confirms it: an ack lost on
        // the way would make the unit run again (harmless, but counted).
        self.msg.double_ack().await.map_err(|e| FleetError::queue(&self.url, e))
    }
    async fn nak(&self, delay: Duration) -> Result<()> {
        self.msg
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| FleetError::queue(&self.url, e))
    }
    async fn term(&self) -> Result<()> {
        self.msg
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| FleetError::queue(&self.url, e))
    }
}

#[async_trait]
impl Queue for NatsQueue {
    fn url(&self) -> &str {
        &self.url
    }

    async fn create_job(&self, job: &JobRecord) -> Result<Option<u64>> {
        check_job_id(&job.id)?;
        match self.kv.create(&job.id, to_json("job", job)?).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn job(&self, id: &str) -> Result<Option<(JobRecord, u64)>> {
        check_job_id(id)?;
        match self.kv.entry(id).await.map_err(|e| self.err(e))? {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((from_json(&format!("job {id}"), &e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    async fn update_job(&self, job: &JobRecord, revision: u64) -> Result<Option<u64>> {
        match self.kv.update(&job.id, to_json("job", job)?, revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let mut keys = self.kv.keys().await.map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| self.err(e))?;
            if let Some((job, _)) = self.job(&k).await? {
                out.push(job);
            }
        }
        Ok(out)
    }

    async fn publish_unit(&self, unit: &UnitMsg) -> Result<()> {
        check_job_id(&unit.job)?;
        let msg = jetstream::message::PublishMessage::build()
            .payload(to_json("unit", unit)?)
            .message_id(format!("{}/{}", unit.job, unit.id));
        self.js
            .send_publish(format!("haul.units.{}", unit.job), msg)
            .await
            .map_err(|e| self.err(e))?
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn pull(&self, job: &str, max: usize, wait: Duration) -> Result<Vec<Box<dyn Delivery>>> {
        let c = self.consumer(job).await?;
        let mut batch = c
            .batch()
            .max_messages(max.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| self.err(e))?;
        let mut out: Vec<Box<dyn Delivery>> = Vec::new();
        while let Some(m) = batch.next().await {
            let msg = m.map_err(|e| self.err(e))?;
            let delivered = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
            match from_json::<UnitMsg>("unit", &msg.payload) {
                Ok(unit) => out.push(Box::new(NatsDelivery {
                    msg,
                    unit,
                    delivered,
                    last: self.opts.max_deliver > 0 && delivered >= self.opts.max_deliver as u64,
                    url: self.url.clone(),
                })),
                Err(e) => {
                    // Not a unit haul can run: never deliver it again.
                    tracing::error!(error = %e, "a unit message that is not a unit: dropped");
                    msg.ack_with(AckKind::Term).await.map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(out)
    }

    async fn publish_result(&self, result: &ResultMsg) -> Result<()> {
        check_job_id(&result.job)?;
        self.js
            .publish(format!("haul.results.{}", result.job), to_json("result", result)?)
            .await
            .map_err(|e| self.err(e))?
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn results(&self, job: &str) -> Result<BoxStream<'static, Result<ResultMsg>>> {
        check_job_id(job)?;
        let c = self
            .results
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("haul.results.{job}"),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(e))?;
        let url = self.url.clone();
        let msgs = c.messages().await.map_err(|e| self.err(e))?;
        Ok(msgs
            .map(move |m| {
                let m = m.map_err(|e| FleetError::queue(&url, e))?;
                from_json::<ResultMsg>("result", &m.payload)
            })
            .boxed())
    }

    async fn pending(&self, job: &str) -> Result<u64> {
        let c = self.consumer(job).await?;
        let info = c.get_info().await.map_err(|e| self.err(e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn purge(&self, job: &str) -> Result<()> {
        check_job_id(job)?;
        self.consumers.lock().await.remove(job);
        let _ = self.units.delete_consumer(&format!("units-{job}")).await;
        self.units
            .purge()
            .filter(format!("haul.units.{job}"))
            .await
            .map_err(|e| self.err(e))?;
        self.results
            .purge()
            .filter(format!("haul.results.{job}"))
            .await
            .map_err(|e| self.err(e))?;
        self.kv.purge(job).await.map_err(|e| self.err(e))?;
        Ok(())
    }
}
