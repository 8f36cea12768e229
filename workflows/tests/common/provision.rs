//! One workflow type, "provision", in four successive versions of its code: a step "b" is added
//! behind the patch "add-b", the patch is deprecated, then removed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cellplane_workflows::{Ctx, WfError, Workflow};

pub const PATCH: &str = "add-b";

/// The code of "provision" as it changes.
#[derive(Clone, Copy, Debug)]
pub enum Code {
    /// a, wait for "go", c.
    Original,
    /// a, b if `patched("add-b")`, wait for "go", c.
    Patched,
    /// a, `deprecate_patch("add-b")`, b, wait for "go", c.
    Deprecated,
    /// a, b, wait for "go", c: the patch is gone (or, on an old history, a step inserted unpatched).
    PatchRemoved,
    /// a, b if `patched_since_step("add-b", "b")`, wait for "go", c: the patch added after "b"
    /// had shipped unpatched.
    PatchedLate,
}

/// The workflow's input is how many times it continues as new before it completes; its output
/// the steps of its last run.
pub struct Provision {
    pub code: Code,
    /// Step bodies executed.
    pub bodies: Arc<AtomicUsize>,
    /// What each `patched` call answered, in order.
    pub answers: Arc<Mutex<Vec<bool>>>,
}

impl Provision {
    pub fn new(code: Code) -> Self {
        Provision { code, bodies: Arc::default(), answers: Arc::default() }
    }

    pub fn answers(&self) -> Vec<bool> {
        self.answers.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> usize {
        self.bodies.load(Ordering::SeqCst)
    }

    async fn step(&self, ctx: &Ctx, name: &str) -> Result<String, WfError> {
        let bodies = self.bodies.clone();
        ctx.step(name)
            .run(|_| {
                bodies.fetch_add(1, Ordering::SeqCst);
                let name = name.to_string();
                async move { Ok(name) }
            })
            .await
    }
}

impl Workflow for Provision {
    const NAME: &'static str = "provision";
    type Input = u32;
    type Output = Vec<String>;
    async fn run(self: Arc<Self>, ctx: Ctx, rollovers: u32) -> Result<Vec<String>, WfError> {
        let mut done = vec![self.step(&ctx, "a").await?];
        let with_b = match self.code {
            Code::Original => false,
            Code::Patched => {
                let patched = ctx.patched(PATCH).await?;
                self.answers.lock().unwrap().push(patched);
                patched
            }
            Code::Deprecated => {
                ctx.deprecate_patch(PATCH).await?;
                true
            }
            Code::PatchRemoved => true,
            Code::PatchedLate => {
                let patched = ctx.patched_since_step(PATCH, "b").await?;
                self.answers.lock().unwrap().push(patched);
                patched
            }
        };
        if with_b {
            done.push(self.step(&ctx, "b").await?);
        }
        ctx.wait_signal::<()>("go", None).await?;
        done.push(self.step(&ctx, "c").await?);
        if rollovers > 0 {
            return ctx.continue_as_new(&(rollovers - 1)).await;
        }
        Ok(done)
    }
}
