//! The waiting side of `catalog.py`'s wake-up row, in native code so that
//! reading a thousand answers costs the load generator little next to the
//! server it measures (Python's asyncio spent ~120 µs of CPU an answer).
//! One thread and one epoll set, as an event-loop client would: a thread a
//! connection made the server's own threads queue behind a thousand
//! runnable ones. Standard library and three libc calls: `catalog.py`
//! builds it with `rustc -O`.
//!
//! Usage: waiters ADDR COUNT REQUEST_FILE READY DONE EXPECT
//!
//! Opens COUNT connections to ADDR and sends each the bytes of
//! REQUEST_FILE. A waiter is parked once READY has arrived (empty: as soon
//! as its request is sent). Prints `parked` when every waiter is, then
//! waits for a `go` line on stdin. A waiter is answered when what it
//! received after parking holds a whole HTTP/1.1 response (DONE = `http`)
//! or the text DONE (a streamed event), and the answer must contain EXPECT.
//! Prints one JSON line: each answer's milliseconds since `go`, the waiters
//! answered before `go`, never, or with an answer lacking EXPECT, and this
//! process's CPU time from `go` to the last answer.

#![allow(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
}

const EPOLL_CTL_ADD: i32 = 1;
const EPOLLIN: u32 = 1;
/// The epoll key of stdin.
const STDIN: u64 = u64::MAX;

#[derive(PartialEq)]
enum Phase {
    Parking,
    Parked,
    Answered,
    Failed,
}

struct Waiter {
    stream: TcpStream,
    got: Vec<u8>,
    /// Where the answer starts in `got` (what came before is parking's).
    start: usize,
    phase: Phase,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: waiters ADDR COUNT REQUEST_FILE READY DONE EXPECT");
        std::process::exit(2);
    }
    let count: usize = args[2].parse().expect("COUNT");
    let request = std::fs::read(&args[3]).expect("REQUEST_FILE");
    let (ready, done, expect) = (args[4].as_str(), args[5].as_str(), args[6].as_str());

    let epoll = unsafe { epoll_create1(0) };
    assert!(epoll >= 0, "epoll_create1");
    let watch = |fd: i32, key: u64| {
        let mut ev = EpollEvent {
            events: EPOLLIN,
            data: key,
        };
        let r = unsafe { epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl");
    };
    let mut waiters = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for i in 0..count {
        let connected = TcpStream::connect(&args[1]).and_then(|mut s| {
            s.set_nodelay(true)?;
            s.write_all(&request)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        let stream = match connected {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("waiter {i}: {e}"));
                continue;
            }
        };
        watch(stream.as_raw_fd(), i as u64);
        waiters.push(Waiter {
            stream,
            got: Vec::new(),
            start: 0,
            phase: if ready.is_empty() {
                Phase::Parked
            } else {
                Phase::Parking
            },
        });
    }
    watch(0, STDIN);

    let mut parked_said = false;
    let mut go: Option<Instant> = None;
    let mut cpu_go = 0;
    let mut early = 0;
    let mut lacking = 0;
    let mut ms = Vec::with_capacity(count);
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let open = waiters
            .iter()
            .filter(|w| matches!(w.phase, Phase::Parking | Phase::Parked))
            .count();
        if !parked_said && waiters.iter().all(|w| w.phase != Phase::Parking) {
            println!("parked");
            std::io::stdout().flush().expect("stdout");
            parked_said = true;
        }
        if (go.is_some() && open == 0) || Instant::now() > deadline {
            break;
        }
        let n = unsafe { epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 1000) };
        for ev in &events[..n.max(0) as usize] {
            let key = ev.data;
            if key == STDIN {
                let mut line = [0u8; 64];
                let _ = std::io::stdin().read(&mut line);
                if go.is_none() {
                    go = Some(Instant::now());
                    cpu_go = cpu_ns();
                }
                continue;
            }
            let w = &mut waiters[key as usize];
            let closed = loop {
                match w.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(k) => w.got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if w.phase == Phase::Parking {
                if let Some(at) = find(&w.got, ready) {
                    w.start = at + ready.len();
                    w.phase = Phase::Parked;
                }
            }
            if w.phase == Phase::Parked {
                let answer = &w.got[w.start..];
                let complete = if done == "http" {
                    http_complete(answer)
                } else {
                    find(answer, done).is_some()
                };
                if complete {
                    w.phase = Phase::Answered;
                    match go {
                        None => early += 1,
                        Some(go) => {
                            let at = Instant::now();
                            ms.push(at.duration_since(go).as_secs_f64() * 1000.0);
                            last = at;
                            lacking += usize::from(find(answer, expect).is_none());
                        }
                    }
                }
            }
            if closed && matches!(w.phase, Phase::Parking | Phase::Parked) {
                w.phase = Phase::Failed;
                failures.push(format!("waiter {key}: closed before its answer"));
            }
        }
    }
    let cpu_ms = cpu_ns().saturating_sub(cpu_go) as f64 / 1e6;
    let unanswered = waiters
        .iter()
        .filter(|w| matches!(w.phase, Phase::Parking | Phase::Parked))
        .count();
    let times = ms
        .iter()
        .map(|m| format!("{m:.3}"))
        .collect::<Vec<_>>()
        .join(",");
    let failures = failures
        .iter()
        .take(5)
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let span = go.map_or(0.0, |go| last.duration_since(go).as_secs_f64() * 1000.0);
    println!(
        "{{\"ms\":[{times}],\"early\":{early},\"unanswered\":{unanswered},\"lacking\":{lacking},\
         \"failures\":[{failures}],\"cpu_ms\":{cpu_ms:.3},\"span_ms\":{span:.3}}}"
    );
}

/// A whole response with a Content-Length body.
fn http_complete(b: &[u8]) -> bool {
    let Some(end) = find(b, "\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    b.len() >= end + 4 + length
}

/// Where `needle` starts in `hay` (str's two-way search: a byte-window
/// scan cost tens of microseconds on a 13 KB answer).
fn find(hay: &[u8], needle: &str) -> Option<usize> {
    String::from_utf8_lossy(hay).find(needle)
}

/// CPU time of every thread of this process, in ns.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
