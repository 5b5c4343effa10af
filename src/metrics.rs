//! What `/metrics` and the dashboard report beyond the bus's counters: MQTT sessions and the
//! durable store.

use std::sync::Arc;

use junction_protocols::mqtt;

/// The parts of the server `/metrics` and the dashboard report beyond the bus's counters.
pub(crate) struct MetricSources {
    pub(crate) mqtt: Option<Arc<mqtt::MqttServer>>,
    pub(crate) store: Option<Arc<junction_store::Store>>,
    pub(crate) store_file: Option<std::path::PathBuf>,
    /// The WebSocket listener's scheme and port (the dashboard's tester connects there).
    pub(crate) websocket: Option<(String, u16)>,
    pub(crate) jetstream: Option<Arc<junction_jetstream::JetStream>>,
    pub(crate) leafs: Option<Arc<junction_protocols::leaf::Leafs>>,
}

/// [`MetricSources`] once the listeners exist (the monitor starts before them).
pub(crate) struct LateSources(pub(crate) Arc<std::sync::OnceLock<MetricSources>>);

impl junction_web::Extra for LateSources {
    fn prometheus(&self) -> String {
        self.0.get().map(MetricSources::render).unwrap_or_default()
    }

    fn varz_jetstream(&self) -> serde_json::Value {
        match self.0.get().and_then(|s| s.jetstream.as_ref()) {
            Some(js) => js.varz(),
            None => serde_json::json!({}),
        }
    }

    fn leafz(&self) -> Vec<serde_json::Value> {
        match self.0.get().and_then(|s| s.leafs.as_ref()) {
            Some(l) => l.leafz().1,
            None => Vec::new(),
        }
    }

    fn jsz(
        &self,
        detail: bool,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send>>>
    {
        let js = self.0.get()?.jetstream.clone()?;
        Some(Box::pin(async move { js.jsz(detail).await }))
    }

    fn dashboard(&self) -> serde_json::Value {
        let Some(s) = self.0.get() else {
            return serde_json::json!({});
        };
        let mut v = serde_json::json!({});
        if let Some(fe) = &s.mqtt {
            let (held, connected, queued) = fe.session_counts();
            v["mqtt_sessions"] =
                serde_json::json!({ "held": held, "connected": connected, "queued": queued });
        }
        if let Some((scheme, port)) = &s.websocket {
            v["websocket"] = serde_json::json!({ "scheme": scheme, "port": port });
        }
        if let Some(leafs) = &s.leafs {
            let mut list: Vec<serde_json::Value> = leafs
                .leafz()
                .1
                .into_iter()
                .map(|mut l| {
                    l["up"] = true.into();
                    l
                })
                .collect();
            for (urls, error) in leafs.down() {
                list.push(serde_json::json!({ "up": false, "urls": urls, "error": error }));
            }
            v["leafnodes"] = list.into();
        }
        v
    }
}

impl MetricSources {
    /// Prometheus text: MQTT sessions and queued messages, the store's size, commits and
    /// commit-duration histogram.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        if let Some(js) = &self.jetstream {
            let c = js.counters();
            let _ = writeln!(
                out,
                "# HELP junction_jetstream_streams JetStream streams.
                 # TYPE junction_jetstream_streams gauge
                 junction_jetstream_streams {}
                 # HELP junction_jetstream_consumers JetStream consumers.
                 # TYPE junction_jetstream_consumers gauge
                 junction_jetstream_consumers {}
                 # HELP junction_jetstream_messages Messages held by JetStream streams.
                 # TYPE junction_jetstream_messages gauge
                 junction_jetstream_messages {}
                 # HELP junction_jetstream_bytes Bytes held by JetStream streams, by storage.
                 # TYPE junction_jetstream_bytes gauge
                 junction_jetstream_bytes{{storage=\"file\"}} {}
                 junction_jetstream_bytes{{storage=\"memory\"}} {}
                 # HELP junction_jetstream_api_requests_total JetStream API requests answered.
                 # TYPE junction_jetstream_api_requests_total counter
                 junction_jetstream_api_requests_total {}
                 # HELP junction_jetstream_api_errors_total JetStream API requests answered with an error.
                 # TYPE junction_jetstream_api_errors_total counter
                 junction_jetstream_api_errors_total {}",
                c.streams.load(Relaxed),
                c.consumers.load(Relaxed),
                c.messages.load(Relaxed),
                c.storage.load(Relaxed),
                c.memory.load(Relaxed),
                c.api_total.load(Relaxed),
                c.api_errors.load(Relaxed),
            );
        }
        if let Some(leafs) = &self.leafs {
            let [up, in_msgs, in_bytes, out_msgs, out_bytes] = leafs.totals();
            let _ = writeln!(
                out,
                "# HELP junction_leafnode_links Leaf node links up.
                 # TYPE junction_leafnode_links gauge
                 junction_leafnode_links {up}
                 # HELP junction_leafnode_messages_total Messages over leaf node links.
                 # TYPE junction_leafnode_messages_total counter
                 junction_leafnode_messages_total{{direction=\"in\"}} {in_msgs}
                 junction_leafnode_messages_total{{direction=\"out\"}} {out_msgs}
                 # HELP junction_leafnode_bytes_total Bytes (headers and payload) over leaf node links.
                 # TYPE junction_leafnode_bytes_total counter
                 junction_leafnode_bytes_total{{direction=\"in\"}} {in_bytes}
                 junction_leafnode_bytes_total{{direction=\"out\"}} {out_bytes}"
            );
        }
        if let Some(fe) = &self.mqtt {
            let (sessions, connected, queued) = fe.session_counts();
            let _ = writeln!(
                out,
                "# HELP junction_mqtt_sessions MQTT sessions held, by whether a client is connected.
                 # TYPE junction_mqtt_sessions gauge
                 junction_mqtt_sessions{{state=\"connected\"}} {connected}
                 junction_mqtt_sessions{{state=\"detached\"}} {}
                 # HELP junction_mqtt_queued_messages QoS 1/2 messages queued in MQTT sessions.
                 # TYPE junction_mqtt_queued_messages gauge
                 junction_mqtt_queued_messages {queued}",
                sessions - connected
            );
        }
        if let Some(store) = &self.store {
            let st = store.stats();
            if let Some(size) = self
                .store_file
                .as_ref()
                .and_then(|f| std::fs::metadata(f).ok())
            {
                let _ = writeln!(
                    out,
                    "# HELP junction_store_size_bytes Size of the durable store's file.
                     # TYPE junction_store_size_bytes gauge
junction_store_size_bytes {}",
                    size.len()
                );
            }
            let _ = writeln!(
                out,
                "# HELP junction_store_operations_total Operations committed to the durable store.
                 # TYPE junction_store_operations_total counter
junction_store_operations_total {}",
                st.ops.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "# HELP junction_store_commit_seconds Time each group commit of the durable store took.
                 # TYPE junction_store_commit_seconds histogram"
            );
            let mut cumulative = 0;
            for (bound, bucket) in junction_store::COMMIT_BUCKETS_MICROS
                .iter()
                .zip(&st.commit_buckets)
            {
                cumulative += bucket.load(Relaxed);
                let _ = writeln!(
                    out,
                    "junction_store_commit_seconds_bucket{{le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let commits = st.commits.load(Relaxed);
            let _ = writeln!(
                out,
                "junction_store_commit_seconds_bucket{{le=\"+Inf\"}} {commits}
                 junction_store_commit_seconds_sum {}
junction_store_commit_seconds_count {commits}",
                st.commit_micros.load(Relaxed) as f64 / 1e6
            );
        }
        // The blocks above are indented in the source: Prometheus lines start at the margin.
        let mut text = String::with_capacity(out.len());
        for line in out.lines() {
            text.push_str(line.trim_start());
            text.push('\n');
        }
        text
    }
}
