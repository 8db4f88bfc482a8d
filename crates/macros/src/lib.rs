//! The `#[trace]` attribute of the tracelake SDK. Use it through `tracelake::trace`; the
//! generated code calls `tracelake::__private`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{AttrStyle, Expr, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Token, Type, parenthesized};

/// Records a span for every call of the function. See `tracelake::trace` for the options.
#[proc_macro_attribute]
pub fn trace(args: TokenStream, item: TokenStream) -> TokenStream {
    let options = syn::parse_macro_input!(args as Options);
    let function = match syn::parse::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let item = TokenStream2::from(item);
            return syn::Error::new_spanned(
                &item,
                "#[trace] can only be put on a function or method with a body (`fn name(...) { ... }`)",
            )
            .to_compile_error()
            .into();
        }
    };
    expand(options, function).unwrap_or_else(|e| e.to_compile_error()).into()
}

/// `#[trace(name = "...", span_type = EXPR, skip(a, b), attributes(key = EXPR, "a.b" = EXPR))]`
#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    span_type: Option<Expr>,
    skip: Vec<Ident>,
    attributes: Vec<(LitStr, Expr)>,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            match key.to_string().as_str() {
                "name" => {
                    input.parse::<Token![=]>()?;
                    let name = input.parse::<LitStr>().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "#[trace] option `name` takes a string literal, e.g. `name = \"retrieve\"`",
                        )
                    })?;
                    set_once(&mut options.name, name, &key)?;
                }
                "span_type" => {
                    input.parse::<Token![=]>()?;
                    set_once(&mut options.span_type, input.parse()?, &key)?;
                }
                "skip" => {
                    let content;
                    parenthesized!(content in input);
                    let names = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
                    options.skip.extend(names);
                }
                "attributes" => {
                    let content;
                    parenthesized!(content in input);
                    let pairs = Punctuated::<Attribute, Token![,]>::parse_terminated(&content)?;
                    options.attributes.extend(pairs.into_iter().map(|a| (a.key, a.value)));
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown #[trace] option `{other}`; expected one of: \
                             name = \"...\", span_type = ..., skip(arg, ...), attributes(key = value, ...)"
                        ),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(options)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Ident) -> syn::Result<()> {
    if slot.replace(value).is_some() {
        return Err(syn::Error::new(key.span(), format!("#[trace] option `{key}` is given twice")));
    }
    Ok(())
}

/// `key = value` in `attributes(...)`; the key is an identifier or a string (`"gen_ai.system"`).
struct Attribute {
    key: LitStr,
    value: Expr,
}

impl Parse for Attribute {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(LitStr) {
            input.parse()?
        } else {
            let ident: Ident = input.parse()?;
            LitStr::new(&ident_name(&ident), ident.span())
        };
        input.parse::<Token![=]>()?;
        Ok(Attribute { key, value: input.parse()? })
    }
}

/// An identifier as users wrote it, without a raw-identifier prefix.
fn ident_name(ident: &Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
}

fn expand(options: Options, function: ItemFn) -> syn::Result<TokenStream2> {
    let ItemFn { attrs, vis, sig, block } = function;
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new(
            c.span(),
            "#[trace] cannot be put on a `const fn`: recording a span is not const",
        ));
    }

    // Arguments recorded as inputs: every named argument except `self` and the skipped ones.
    let mut recorded = Vec::new();
    let mut seen = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(typed) = arg else { continue };
        if let Pat::Ident(p) = &*typed.pat {
            seen.push(p.ident.clone());
            if !options.skip.iter().any(|s| ident_name(s) == ident_name(&p.ident)) {
                recorded.push(p.ident.clone());
            }
        }
    }
    if let Some(unknown) = options.skip.iter().find(|s| !seen.iter().any(|a| ident_name(a) == ident_name(s)))
    {
        return Err(syn::Error::new(
            unknown.span(),
            format!("skip({unknown}): `{unknown}` is not an argument of this function"),
        ));
    }

    let fn_name = ident_name(&sig.ident);
    // An identifier needs no escaping: its JSON string is the name in quotes.
    let fn_name_json = LitStr::new(&format!("\"{fn_name}\""), sig.ident.span());
    let span_name = options.name.unwrap_or_else(|| LitStr::new(&fn_name, sig.ident.span()));
    let span_type = match &options.span_type {
        Some(expr) => expr.to_token_stream(),
        None => quote!(::tracelake::SpanType::Unknown),
    };
    // Argument names are identifiers: their JSON strings are the names in quotes.
    let input_names = recorded.iter().map(|i| LitStr::new(&format!("\"{}\"", ident_name(i)), i.span()));
    let attr_keys = options.attributes.iter().map(|(k, _)| k);
    let attr_values = options.attributes.iter().map(|(_, v)| v);

    let make_builder = quote! {
        || {
            #[allow(unused_imports)]
            use ::tracelake::__private::{JsonViaDebug as _, JsonViaSerialize as _, JsonViaTypeName as _};
            #[allow(unused_mut)]
            let mut __tl_inputs = ::tracelake::__private::Inputs::new();
            #(
                __tl_inputs.key_json(#input_names);
                (&&&::tracelake::__private::Probe(&#recorded)).__tl_write(__tl_inputs.value());
            )*
            let __tl_builder = ::tracelake::__private::fn_span(#span_name, #fn_name_json, #span_type)
                #( .attribute(#attr_keys, &(#attr_values)) )*;
            ::tracelake::__private::with_inputs(__tl_builder, __tl_inputs)
        }
    };

    // Pin the body's type to the declared return type, so `?` and `return` inside the
    // closure or async block infer exactly as they do in the function itself.
    let pin_return_type = match &sig.output {
        // `!` cannot be named in a `let` on stable Rust; a diverging body needs no pin anyway.
        ReturnType::Type(_, ty) if matches!(**ty, Type::Never(_)) => quote!(),
        ReturnType::Type(_, ty) if !contains_impl_trait(ty) => quote! {
            #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
            if false {
                let __tl_never: #ty = ::core::unreachable!();
                return __tl_never;
            }
        },
        ReturnType::Type(..) => quote!(),
        ReturnType::Default => quote! {
            #[allow(unreachable_code)]
            if false { return; }
        },
    };

    // A diverging function never produces a value to record (a panic is recorded on its way).
    let diverges = matches!(&sig.output, ReturnType::Type(_, ty) if matches!(**ty, Type::Never(_)));
    let record_outcome = if diverges {
        quote!()
    } else {
        quote! {
            if __tl_span.is_recording() {
                #[allow(unused_imports)]
                use ::tracelake::__private::{
                    ErrorNone as _, ErrorViaDebug as _, ErrorViaDisplay as _, ErrorViaType as _,
                    OutputViaDebug as _, OutputViaResult as _, OutputViaResultSerialize as _,
                    OutputViaSerialize as _, OutputViaTypeName as _,
                };
                let __tl_outputs = (&&&&&::tracelake::__private::Probe(&__tl_ret)).__tl_output();
                let __tl_error = (&&&&::tracelake::__private::Probe(&__tl_ret)).__tl_error();
                __tl_span.finish(__tl_outputs, __tl_error);
            }
        }
    };

    // Splice the statements rather than nesting the block, so lints such as `unused_braces`
    // see the user's code as written.
    let stmts = &block.stmts;
    let body = if sig.asyncness.is_some() {
        quote! {
            let __tl_span = ::tracelake::__private::FnSpan::start(#make_builder);
            let __tl_ret = __tl_span.run_async(async move { #pin_return_type #(#stmts)* }).await;
            #record_outcome
            __tl_ret
        }
    } else if diverges {
        quote! {
            let __tl_span = ::tracelake::__private::FnSpan::enter(#make_builder);
            ::tracelake::__private::catch_sync(&__tl_span, move || { #(#stmts)* })
        }
    } else {
        quote! {
            let __tl_span = ::tracelake::__private::FnSpan::enter(#make_builder);
            let __tl_ret = ::tracelake::__private::catch_sync(&__tl_span, move || { #pin_return_type #(#stmts)* });
            #record_outcome
            __tl_ret
        }
    };

    // Inner attributes (`#![allow(...)]` in the body) stay inside the body.
    let (inner, outer): (Vec<_>, Vec<_>) = attrs.iter().partition(|a| matches!(a.style, AttrStyle::Inner(_)));
    Ok(quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #body
        }
    })
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    syn::visit::visit_type(&mut finder, ty);
    finder.0
}
