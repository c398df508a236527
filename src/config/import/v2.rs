//! ContainerPilot 1.x/2.x → pilotfish jobs (../shared/reference/containerpilot-2x.md
//! §8 is the mapping): the application from ContainerPilot's command line is
//! the primary job, `preStart` runs before it and before the coprocesses and
//! tasks, `preStop`/`postStop` hang on its `stopping`/`stopped` events, the
//! first service is registered by the application's job and any other service
//! by an exec-less job, each backend is a watch plus an `onchange-<name>` job,
//! coprocesses restart, tasks are periodic jobs, sensors are metrics fed by a
//! periodic `pilotfish putmetric` job.

use super::{join, Conv, Version, J};
use crate::config::raw::{
    RawConfig, RawHealth, RawJob, RawJobLogging, RawMetric, RawRestarts, RawTelemetry, RawWatch,
    RawWhen, StringOrList,
};

const TOP_KEYS: &[&str] = &[
    "consul",
    "etcd",
    "onStart",
    "preStart",
    "preStop",
    "postStop",
    "stopTimeout",
    "services",
    "backends",
    "coprocesses",
    "tasks",
    "telemetry",
    "logging",
];

/// `when` for "after preStart succeeded", if there is a preStart.
fn after_pre_start(pre_start: bool) -> Option<RawWhen> {
    pre_start.then(|| RawWhen {
        source: Some("preStart".into()),
        once: Some("exitSuccess".into()),
        ..RawWhen::default()
    })
}

/// `when` for a periodic job: every `every`, from startup, or from preStart's
/// success when there is one (ContainerPilot started its pollers after it).
fn periodic(every: String, pre_start: bool) -> RawWhen {
    RawWhen {
        interval: Some(every),
        ..after_pre_start(pre_start).unwrap_or_default()
    }
}

fn basename(argv: &Option<StringOrList>) -> Option<String> {
    match argv {
        Some(StringOrList::Many(v)) => v.first(),
        Some(StringOrList::One(s)) => Some(s),
        None => None,
    }
    .filter(|a| !a.contains('$'))
    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
    .filter(|b| !b.is_empty())
}

impl Conv {
    pub(super) fn config_v2(
        &mut self,
        top: &[(String, J)],
        version: Version,
        app: &[String],
    ) -> RawConfig {
        let f = self.fields("", top, TOP_KEYS, false);
        let mut raw = RawConfig::default();
        match (f.get("consul"), f.get("etcd")) {
            (Some(v), _) => raw.consul = self.consul(v),
            (None, Some(_)) => self.note("etcd", "pilotfish discovers through the Consul HTTP API only (its embedded agent or a real Consul); etcd dropped — run `pilotfish agent` (or Consul) and set consul = \"host:8500\""),
            (None, None) => self.note("consul", "absent; ContainerPilot refused to start without a discovery backend, pilotfish runs as a plain supervisor without Consul"),
        }
        if let Some(v) = f.get("logging") {
            raw.logging = self.logging(v);
        }
        self.log_to_stdout(&mut raw);

        // Hooks around the application.
        let pre_start = match (f.get("preStart"), f.get("onStart")) {
            (Some(v), other) => {
                if other.is_some() {
                    self.note(
                        "onStart",
                        "ignored: preStart is also set and wins, as in ContainerPilot",
                    );
                }
                self.hook("preStart", v)
            }
            (None, Some(v)) => {
                let job = self.hook("onStart", v);
                if job.is_some() {
                    self.note(
                        "onStart",
                        "the deprecated name of preStart; converted to the job \"preStart\"",
                    );
                }
                job
            }
            (None, None) => None,
        };
        let has_pre_start = pre_start.is_some();
        if let Some(mut j) = pre_start {
            j.name = "preStart".into();
            raw.jobs.push(j);
        }

        // The application, and the service it registers.
        let services: Vec<(usize, &J)> = match f.get("services") {
            Some(J::Arr(items)) => items
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != J::Null)
                .collect(),
            Some(other) => {
                self.note(
                    "services",
                    format!(
                        "{} is not an array; ContainerPilot silently ignored it, dropped",
                        other.kind()
                    ),
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut service_jobs: Vec<RawJob> = Vec::new();
        for (i, v) in &services {
            let path = format!("services[{i}]");
            if let Some(o) = self.object(&path, v) {
                if let Some(j) = self.service(&path, o) {
                    service_jobs.push(j);
                }
            }
        }
        let stop_timeout = f.get("stopTimeout").and_then(|v| self.stop_timeout_v2(v));
        let app_name = if app.is_empty() {
            self.note("command line", "ContainerPilot ran the application named after its flags (containerpilot -config FILE APP ARGS...); none was given to the importer, so there is no application job — pass it after `--` (pilotfish config import FILE -- nginx -g 'daemon off;') or add the job by hand");
            if stop_timeout.is_some() {
                self.note(
                    "stopTimeout",
                    "applied to the application, which was not given; dropped",
                );
            }
            None
        } else {
            let mut job = if service_jobs.is_empty() {
                RawJob {
                    name: "app".into(),
                    ..RawJob::default()
                }
            } else {
                // The first service is the application's: its job registers it.
                let svc = service_jobs.remove(0);
                self.note("services[0]", format!("registered by the application's job (named \"{}\" after the service), which runs the command line and is checked by the service's health command", svc.name));
                svc
            };
            job.exec = Some(StringOrList::Many(app.to_vec()));
            job.primary = Some(true);
            job.when = after_pre_start(has_pre_start);
            job.logging = Some(RawJobLogging { raw: Some(true) });
            job.stop_timeout = stop_timeout.or_else(|| Some("5s".into()));
            let name = job.name.clone();
            raw.jobs.push(job);
            Some(name)
        };
        if !service_jobs.is_empty() {
            self.note("services", "ContainerPilot registered every service whatever ran; a service beyond the application's became a job without exec that registers it and runs its health command");
        }
        raw.jobs.extend(service_jobs);

        for (key, event) in [("preStop", "stopping"), ("postStop", "stopped")] {
            let Some(v) = f.get(key) else { continue };
            let Some(mut j) = self.hook(key, v) else {
                continue;
            };
            j.name = key.into();
            j.when = Some(match (&app_name, key) {
                (Some(app), _) => RawWhen {
                    source: Some(app.clone()),
                    once: Some(event.into()),
                    ..RawWhen::default()
                },
                (None, "preStop") => {
                    self.note("preStop", "without an application ContainerPilot ran preStop when it was told to stop; it now runs at pilotfish's shutdown");
                    RawWhen {
                        source: Some("global".into()),
                        once: Some("shutdown".into()),
                        ..RawWhen::default()
                    }
                }
                (None, _) => {
                    self.note("postStop", "ran after the application exited; with no application it never ran, dropped");
                    continue;
                }
            });
            if key == "postStop" {
                self.note("postStop", "ContainerPilot exited with postStop's status when it failed; pilotfish exits with the application's");
            }
            raw.jobs.push(j);
        }

        if let Some(v) = f.get("backends") {
            self.backends(v, &mut raw);
        }
        if let Some(v) = f.get("coprocesses") {
            for (i, item) in self.items("coprocesses", v).into_iter().enumerate() {
                if let Some(j) = self.coprocess(&format!("coprocesses[{i}]"), item, has_pre_start) {
                    raw.jobs.push(j);
                }
            }
        }
        if let Some(v) = f.get("tasks") {
            for (i, item) in self.items("tasks", v).into_iter().enumerate() {
                if let Some(j) = self.task(&format!("tasks[{i}]"), i, item, has_pre_start) {
                    raw.jobs.push(j);
                }
            }
        }
        if let Some(v) = f.get("telemetry") {
            raw.telemetry = self.telemetry_v2(v, &mut raw.jobs, has_pre_start);
        }
        dedupe_names(self, &mut raw.jobs);
        if version == Version::V1 {
            self.note("version", "Containerbuddy/ContainerPilot 1.x wrote the same keys as 2.x (onStart for preStart); converted with the 2.x rules");
        }
        raw
    }

    /// A key ContainerPilot required: None (noted) when it is missing.
    pub(super) fn require<T>(
        &mut self,
        path: &str,
        what: &str,
        key: &str,
        v: Option<T>,
    ) -> Option<T> {
        if v.is_none() {
            self.note(
                path,
                format!("no {key} (ContainerPilot rejected this {what}); dropped"),
            );
        }
        v
    }

    /// An array's objects (ContainerPilot dropped a non-array silently).
    fn items<'j>(&mut self, key: &str, v: &'j J) -> Vec<&'j [(String, J)]> {
        let J::Arr(items) = v else {
            self.note(
                key,
                format!(
                    "{} is not an array; ContainerPilot silently ignored it, dropped",
                    v.kind()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if *item == J::Null {
                continue;
            }
            if let Some(o) = self.object(&format!("{key}[{i}]"), item) {
                out.push(o);
            }
        }
        out
    }

    /// preStart, preStop, postStop: run once, output passed through.
    fn hook(&mut self, key: &str, v: &J) -> Option<RawJob> {
        let (exec, _) = self.exec(key, v);
        Some(RawJob {
            name: key.into(),
            exec: Some(exec?),
            logging: Some(RawJobLogging { raw: Some(true) }),
            ..RawJob::default()
        })
    }

    fn stop_timeout_v2(&mut self, v: &J) -> Option<String> {
        let n = self.int("stopTimeout", v)?;
        Some(match n {
            n if n < 0 => {
                self.note("stopTimeout", format!("{n} meant SIGKILL at once; written as \"1ms\" (pilotfish sends the stop signal first)"));
                "1ms".into()
            }
            0 => "5s".into(), // ContainerPilot replaced 0 by its default.
            n => format!("{n}s"),
        })
    }

    fn service(&mut self, path: &str, o: &[(String, J)]) -> Option<RawJob> {
        let f = self.fields(
            path,
            o,
            &[
                "name",
                "port",
                "poll",
                "ttl",
                "health",
                "timeout",
                "interfaces",
                "tags",
                "consul",
            ],
            false,
        );
        let name = f
            .get("name")
            .and_then(|v| self.string(&join(path, "name"), v));
        let name = self.require(path, "service", "name", name)?;
        let mut job = RawJob {
            name,
            ..RawJob::default()
        };
        job.port = f
            .get("port")
            .and_then(|v| self.int_ref(&join(path, "port"), v));
        if job.port.is_none() {
            self.note(&join(path, "port"), "absent (ContainerPilot rejected a service without port); the job will not register until you add one");
        }
        let mut health = RawHealth {
            interval: f
                .get("poll")
                .and_then(|v| self.seconds(&join(path, "poll"), v)),
            ttl: f
                .get("ttl")
                .and_then(|v| self.seconds(&join(path, "ttl"), v)),
            timeout: f
                .get("timeout")
                .and_then(|v| self.duration(&join(path, "timeout"), v)),
            ..RawHealth::default()
        };
        match f.get("health") {
            Some(v) => health.exec = self.exec(&join(path, "health"), v).0,
            None => self.note(&join(path, "health"), "absent: ContainerPilot sent a heartbeat every poll without checking anything; pilotfish does the same while the job runs"),
        }
        self.ttl_above_interval(&join(path, "ttl"), &mut health, "poll");
        job.health = Some(health);
        self.service_fields(path, &f, &mut job);
        self.note(path, "the TTL check's ID was the service ID in ContainerPilot 2.x; pilotfish's is service:<ID> (the service ID, <name>-<hostname>, is unchanged)");
        Some(job)
    }

    fn backends(&mut self, v: &J, raw: &mut RawConfig) {
        let items = self.items("backends", v);
        for (i, o) in items.into_iter().enumerate() {
            let path = format!("backends[{i}]");
            let f = self.fields(
                &path,
                o,
                &["name", "poll", "onChange", "tag", "timeout"],
                false,
            );
            let name = f
                .get("name")
                .and_then(|v| self.string(&join(&path, "name"), v));
            let Some(name) = self.require(&path, "backend", "name", name) else {
                continue;
            };
            let interval = f
                .get("poll")
                .and_then(|v| self.seconds(&join(&path, "poll"), v));
            if let Some(iv) = &interval {
                self.note(&join(&path, "poll"), format!("ContainerPilot asked Consul every {iv}; pilotfish uses blocking queries and sees a change at once, so it is now the minimum time between two onChange runs"));
            }
            raw.watches.push(RawWatch {
                name: name.clone(),
                tag: f
                    .get("tag")
                    .and_then(|v| self.string(&join(&path, "tag"), v)),
                interval,
                ..RawWatch::default()
            });
            match f.get("onChange").map(|v| self.exec(&join(&path, "onChange"), v).0) {
                Some(Some(exec)) => raw.jobs.push(RawJob {
                    name: format!("onchange-{name}"),
                    exec: Some(exec),
                    when: Some(RawWhen {
                        source: Some(format!("watch.{name}")),
                        each: Some("changed".into()),
                        ..RawWhen::default()
                    }),
                    timeout: f.get("timeout").and_then(|v| self.duration(&join(&path, "timeout"), v)),
                    ..RawJob::default()
                }),
                _ => self.note(&join(&path, "onChange"), "absent (ContainerPilot rejected a backend without onChange); the watch is kept, nothing runs on a change"),
            }
        }
    }

    fn coprocess(&mut self, path: &str, o: &[(String, J)], pre_start: bool) -> Option<RawJob> {
        let f = self.fields(path, o, &["command", "name", "restarts"], false);
        let exec = f
            .get("command")
            .and_then(|v| self.exec(&join(path, "command"), v).0);
        let exec = self.require(path, "coprocess", "command", exec)?;
        let name = f
            .get("name")
            .and_then(|v| self.string(&join(path, "name"), v))
            .map(|n| n.replace([' ', '/'], "-"))
            .or_else(|| basename(&Some(exec.clone())))
            .unwrap_or_else(|| "coprocess".into());
        let restarts = match f.get("restarts") {
            Some(v) => self.restarts(&join(path, "restarts"), v, false, false),
            None => Some(RawRestarts::Word("never".into())),
        };
        Some(RawJob {
            name,
            exec: Some(exec),
            restarts,
            when: after_pre_start(pre_start),
            ..RawJob::default()
        })
    }

    fn task(
        &mut self,
        path: &str,
        index: usize,
        o: &[(String, J)],
        pre_start: bool,
    ) -> Option<RawJob> {
        let f = self.fields(path, o, &["command", "frequency", "timeout", "name"], false);
        let exec = f
            .get("command")
            .and_then(|v| self.exec(&join(path, "command"), v).0);
        let exec = self.require(path, "task", "command", exec)?;
        let frequency = f
            .get("frequency")
            .and_then(|v| self.duration(&join(path, "frequency"), v));
        let frequency = self.require(path, "task", "frequency", frequency)?;
        let name = f
            .get("name")
            .and_then(|v| self.string(&join(path, "name"), v))
            .map(|n| n.replace([' ', '/'], "-"))
            .or_else(|| basename(&Some(exec.clone())).map(|b| format!("task-{b}")))
            .unwrap_or_else(|| format!("task-{index}"));
        self.note(path, "ContainerPilot ran a task first one frequency after start; pilotfish runs it at start (after preStart succeeded, if there is one), then every frequency (never two runs at once, as before)");
        let timeout = f
            .get("timeout")
            .and_then(|v| self.duration(&join(path, "timeout"), v))
            .or_else(|| Some(frequency.clone()));
        Some(RawJob {
            name,
            exec: Some(exec),
            when: Some(periodic(frequency, pre_start)),
            timeout,
            ..RawJob::default()
        })
    }

    fn telemetry_v2(
        &mut self,
        v: &J,
        jobs: &mut Vec<RawJob>,
        pre_start: bool,
    ) -> Option<RawTelemetry> {
        let o = self.object("telemetry", v)?;
        let f = self.fields(
            "telemetry",
            o,
            &["port", "interfaces", "tags", "sensors"],
            false,
        );
        let port = match f.get("port") {
            Some(v) => self.int_ref("telemetry.port", v),
            None => Some(crate::config::raw::RawInt::Int(9090)), // 2.x's default
        };
        let interfaces = f
            .get("interfaces")
            .and_then(|v| self.string_or_list("telemetry.interfaces", v));
        let tags = f
            .get("tags")
            .map(|v| self.strings("telemetry.tags", v))
            .unwrap_or_default();
        let mut metrics = Vec::new();
        if let Some(v) = f.get("sensors") {
            for (i, o) in self.items("telemetry.sensors", v).into_iter().enumerate() {
                let path = format!("telemetry.sensors[{i}]");
                if let Some((m, job)) = self.sensor(&path, o, pre_start) {
                    metrics.push(m);
                    jobs.extend(job);
                }
            }
        }
        self.implicit.push("telemetry.service = \"containerpilot\": ContainerPilot registered its telemetry endpoint in Consul as service \"containerpilot\" (pilotfish's default name is \"pilotfish\"), which Prometheus consul_sd_configs may look for".into());
        Some(RawTelemetry {
            port,
            service: Some("containerpilot".into()),
            interfaces,
            tags,
            metrics,
        })
    }

    /// A 2.x sensor: the metric, and a periodic job that runs its check and
    /// hands the number it prints to `pilotfish putmetric`.
    fn sensor(
        &mut self,
        path: &str,
        o: &[(String, J)],
        pre_start: bool,
    ) -> Option<(RawMetric, Option<RawJob>)> {
        let f = self.fields(
            path,
            o,
            &[
                "namespace",
                "subsystem",
                "name",
                "help",
                "type",
                "poll",
                "check",
                "timeout",
            ],
            false,
        );
        let shape: Vec<(String, J)> = o
            .iter()
            .filter(|(k, _)| {
                ["namespace", "subsystem", "name", "help", "type"]
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(k))
            })
            .cloned()
            .collect();
        let metric = self.metric(path, &J::Obj(shape))?;
        let check = f
            .get("check")
            .and_then(|v| self.exec(&join(path, "check"), v).0);
        let poll = f
            .get("poll")
            .and_then(|v| self.seconds(&join(path, "poll"), v));
        let (Some(StringOrList::Many(argv)), Some(poll)) = (check, poll) else {
            self.note(path, format!("needs check and poll to be measured (ContainerPilot rejected it otherwise); metric {} declared, nothing updates it", metric.name));
            return Some((metric, None));
        };
        let command = shell_words::join(&argv);
        self.note(path, format!("ContainerPilot ran check every poll and read the number it printed; pilotfish has no such protocol, so job \"{}\" runs it and passes the output to `pilotfish putmetric` (\"$PILOTFISH_BIN\", which pilotfish sets for its jobs)", sensor_job_name(&metric.name)));
        let job = RawJob {
            name: sensor_job_name(&metric.name),
            exec: Some(StringOrList::One(format!(
                "\"$PILOTFISH_BIN\" putmetric {}=\"$({command})\"",
                metric.name
            ))),
            shell: Some(true),
            when: Some(periodic(poll.clone(), pre_start)),
            timeout: f
                .get("timeout")
                .and_then(|v| self.duration(&join(path, "timeout"), v))
                .or(Some(poll)),
            ..RawJob::default()
        };
        Some((metric, Some(job)))
    }
}

/// Two jobs with one name (a coprocess named like a service, two tasks of
/// one binary): the later ones get `-2`, `-3`, as the 3.x importer does.
fn dedupe_names(conv: &mut Conv, jobs: &mut [RawJob]) {
    let mut seen: Vec<String> = Vec::new();
    for job in jobs.iter_mut() {
        if seen.contains(&job.name) {
            let mut n = 2;
            while seen.contains(&format!("{}-{n}", job.name)) {
                n += 1;
            }
            let new = format!("{}-{n}", job.name);
            conv.notes.push(format!(
                "jobs: two jobs would be named \"{}\"; the later one is \"{new}\"",
                job.name
            ));
            job.name = new;
        }
        seen.push(job.name.clone());
    }
}

/// The periodic job that measures a 2.x sensor (job names use `-`, not `_`).
fn sensor_job_name(metric: &str) -> String {
    format!("sensor-{}", metric.replace('_', "-"))
}
