//! Tracing a function or closure without editing it.

use std::borrow::Cow;
use std::future::Future;

use serde::Serialize;
use tracelake_model::{SpanType, encode_attribute, write_attribute};

use crate::__private::{FnSpan, Inputs, catch_sync};
use crate::span::SpanBuilder;

/// Wraps `f` so that every call through [`Traced::call`] records a span named `name`, with
/// the arguments as inputs and the return value as outputs (MLflow's `mlflow.trace(fn)`).
///
/// ```
/// let pow = tracelake::traced("pow", f64::powf).arg_names(["base", "exponent"]);
/// assert_eq!(pow.call((2.0, 10.0)), 1024.0);
/// // recorded: inputs {"base": 2.0, "exponent": 10.0}, outputs 1024.0
/// ```
pub fn traced<F>(name: impl Into<Cow<'static, str>>, f: F) -> Traced<F> {
    Traced {
        f,
        name: name.into(),
        span_type: SpanType::Unknown,
        arg_names: Vec::new(),
        attributes: Vec::new(),
    }
}

/// A function wrapped by [`traced`].
#[derive(Clone)]
pub struct Traced<F> {
    f: F,
    name: Cow<'static, str>,
    span_type: SpanType,
    arg_names: Vec<Cow<'static, str>>,
    attributes: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl<F> std::fmt::Debug for Traced<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced").field("name", &self.name).field("span_type", &self.span_type).finish()
    }
}

impl<F> Traced<F> {
    pub fn span_type(mut self, span_type: impl Into<SpanType>) -> Self {
        self.span_type = span_type.into();
        self
    }

    /// Names the arguments in the recorded inputs (default `arg0`, `arg1`, ...).
    pub fn arg_names<N: Into<Cow<'static, str>>>(mut self, names: impl IntoIterator<Item = N>) -> Self {
        self.arg_names = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn attribute<T: Serialize + ?Sized>(mut self, key: impl Into<Cow<'static, str>>, value: &T) -> Self {
        self.attributes.push((key.into(), encode_attribute(value).into()));
        self
    }

    fn builder<A: Args>(&self, args: &A) -> SpanBuilder {
        let mut b = crate::span::span(self.name.clone()).span_type(self.span_type.clone());
        b.attributes.extend(self.attributes.iter().cloned());
        let mut inputs = Inputs::new();
        args.record(&self.arg_names, &mut inputs);
        crate::__private::with_inputs(b, inputs)
    }

    /// Calls the function with `args` (a tuple) inside a span.
    pub fn call<A, R>(&self, args: A) -> R
    where
        A: Args,
        F: Callable<A, Output = R>,
        R: Serialize,
    {
        let span = FnSpan::enter(|| self.builder(&args));
        let ret = catch_sync(&span, || self.f.call_with(args));
        span.finish(Some(encode_attribute(&ret)), None);
        ret
    }

    /// Calls a fallible function: `Ok` is recorded as outputs, `Err` as an exception.
    pub fn call_fallible<A, T, E>(&self, args: A) -> Result<T, E>
    where
        A: Args,
        F: Callable<A, Output = Result<T, E>>,
        T: Serialize,
        E: std::fmt::Display + std::fmt::Debug,
    {
        let span = FnSpan::enter(|| self.builder(&args));
        let ret = catch_sync(&span, || self.f.call_with(args));
        use crate::__private::ErrorViaDisplay as _;
        let error = (&&&crate::__private::Probe(&ret)).__tl_error();
        span.finish(ret.as_ref().ok().map(encode_attribute), error);
        ret
    }

    /// Calls an async function; the span covers the future until it completes.
    pub async fn call_async<A, Fut>(&self, args: A) -> Fut::Output
    where
        A: Args,
        F: Callable<A, Output = Fut>,
        Fut: Future,
        Fut::Output: Serialize,
    {
        let span = FnSpan::start(|| self.builder(&args));
        let ret = span.run_async(self.f.call_with(args)).await;
        span.finish(Some(encode_attribute(&ret)), None);
        ret
    }
}

/// Argument tuples a [`Traced`] function can record.
pub trait Args {
    /// Adds each argument to `inputs`, named by `names` or by position.
    fn record(&self, names: &[Cow<'static, str>], inputs: &mut Inputs);
}

/// Functions callable with an argument tuple.
pub trait Callable<A> {
    type Output;
    fn call_with(&self, args: A) -> Self::Output;
}

macro_rules! tuple_impls {
    ($( ($($arg:ident $idx:tt),*) )*) => {$(
        impl<$($arg: Serialize),*> Args for ($($arg,)*) {
            #[allow(unused_variables)]
            fn record(&self, names: &[Cow<'static, str>], inputs: &mut Inputs) {
                $(
                    let name = names.get($idx).map_or_else(|| Cow::Owned(format!("arg{}", $idx)), Clone::clone);
                    inputs.key(&name);
                    write_attribute(inputs.value(), &self.$idx);
                )*
            }
        }

        impl<Func, Ret, $($arg),*> Callable<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Ret,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call_with(&self, ($($arg,)*): ($($arg,)*)) -> Ret {
                (self)($($arg),*)
            }
        }
    )*};
}

tuple_impls! {
    ()
    (A0 0)
    (A0 0, A1 1)
    (A0 0, A1 1, A2 2)
    (A0 0, A1 1, A2 2, A3 3)
    (A0 0, A1 1, A2 2, A3 3, A4 4)
    (A0 0, A1 1, A2 2, A3 3, A4 4, A5 5)
    (A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6)
    (A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7)
}
