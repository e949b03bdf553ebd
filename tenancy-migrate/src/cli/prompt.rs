//! Prompts: `inquire` on a terminal, a clear error without one.

use std::io::IsTerminal;

use inquire::ui::{RenderConfig, Styled};
use inquire::validator::Validation;
use inquire::{Confirm, InquireError, Password, PasswordDisplayMode, Select, Text};

use crate::{Error, Result};

/// Whether and how to ask for missing values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prompter {
    interactive: bool,
    no_input: bool,
}

impl Prompter {
    pub(crate) fn new(no_input: bool) -> Self {
        Self { interactive: !no_input && std::io::stdin().is_terminal(), no_input }
    }

    /// Whether prompts can be shown (a terminal, and no --no-input).
    pub(crate) fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// The error for a value that is missing and cannot be asked for.
    pub(crate) fn missing(&self, what: &str, flag: &str) -> Error {
        Error::MissingInput { what: what.to_owned(), how: format!("pass {flag} ({})", self.why_not_asked()) }
    }

    /// The error for a password that is missing and cannot be asked for.
    fn missing_password(&self, what: &str, env: &str) -> Error {
        Error::MissingInput {
            what: what.to_owned(),
            how: format!("set {env} ({}; passwords are never taken from flags)", self.why_not_asked()),
        }
    }

    fn why_not_asked(&self) -> &'static str {
        if self.no_input { "--no-input was given" } else { "there is no terminal to ask on" }
    }

    pub(crate) fn text(
        &self,
        message: &str,
        flag: &str,
        what: &str,
        validate: impl Fn(&str) -> std::result::Result<(), String> + Clone + 'static,
    ) -> Result<String> {
        if !self.interactive {
            return Err(self.missing(what, flag));
        }
        let validator = move |input: &str| {
            Ok(match validate(input.trim()) {
                Ok(()) => Validation::Valid,
                Err(message) => Validation::Invalid(message.into()),
            })
        };
        Text::new(message)
            .with_render_config(render_config())
            .with_validator(validator)
            .prompt()
            .map(|answer| answer.trim().to_owned())
            .map_err(|err| prompt_error(message, err))
    }

    /// A text prompt whose empty answer means `default`.
    pub(crate) fn text_with_default(
        &self,
        message: &str,
        flag: &str,
        what: &str,
        default: &'static str,
        validate: impl Fn(&str) -> std::result::Result<(), String> + Clone + 'static,
    ) -> Result<String> {
        if !self.interactive {
            return Err(self.missing(what, flag));
        }
        let validator = move |input: &str| {
            let input = input.trim();
            Ok(match validate(if input.is_empty() { default } else { input }) {
                Ok(()) => Validation::Valid,
                Err(message) => Validation::Invalid(message.into()),
            })
        };
        let answer = Text::new(message)
            .with_render_config(render_config())
            .with_validator(validator)
            .with_formatter(&|answer| {
                if answer.trim().is_empty() { default.to_owned() } else { answer.trim().to_owned() }
            })
            .prompt()
            .map_err(|err| prompt_error(message, err))?;
        let answer = answer.trim();
        Ok(if answer.is_empty() { default } else { answer }.to_owned())
    }

    pub(crate) fn select<T: std::fmt::Display>(
        &self,
        message: &str,
        flag: &str,
        what: &str,
        options: Vec<T>,
    ) -> Result<T> {
        if !self.interactive {
            return Err(self.missing(what, flag));
        }
        Select::new(message, options)
            .with_render_config(render_config())
            .with_vim_mode(false)
            .prompt()
            .map_err(|err| prompt_error(message, err))
    }

    /// A selection whose cursor starts on `default` (an index into `options`).
    pub(crate) fn select_from<T: std::fmt::Display>(
        &self,
        message: &str,
        flag: &str,
        what: &str,
        options: Vec<T>,
        default: usize,
    ) -> Result<T> {
        if !self.interactive {
            return Err(self.missing(what, flag));
        }
        Select::new(message, options)
            .with_render_config(render_config())
            .with_vim_mode(false)
            .with_starting_cursor(default)
            .prompt()
            .map_err(|err| prompt_error(message, err))
    }

    pub(crate) fn confirm(&self, message: &str, flag: &str, what: &str) -> Result<bool> {
        if !self.interactive {
            return Err(self.missing(what, flag));
        }
        Confirm::new(message)
            .with_render_config(render_config())
            .with_formatter(&|yes| if yes { "y" } else { "n" }.to_owned())
            .prompt()
            .map_err(|err| prompt_error(message, err))
    }

    /// A masked password prompt, asked once.
    pub(crate) fn password(&self, message: &str, what: &str, env: &str) -> Result<tenancy::secrets::Password> {
        if !self.interactive {
            return Err(self.missing_password(what, env));
        }
        Password::new(message)
            .with_render_config(render_config())
            .with_display_mode(PasswordDisplayMode::Masked)
            .without_confirmation()
            .with_validator(|input: &str| {
                Ok(if input.is_empty() {
                    Validation::Invalid("The password must not be empty".into())
                } else {
                    Validation::Valid
                })
            })
            .prompt()
            .map(tenancy::secrets::Password::new)
            .map_err(|err| prompt_error(message, err))
    }

    /// A password typed hidden (nothing echoed, not even its length), asked once.
    pub(crate) fn hidden_password(&self, message: &str, what: &str, env: &str) -> Result<tenancy::secrets::Password> {
        if !self.interactive {
            return Err(self.missing_password(what, env));
        }
        Password::new(message)
            .with_render_config(render_config())
            .with_display_mode(PasswordDisplayMode::Hidden)
            .without_confirmation()
            .prompt()
            .map(tenancy::secrets::Password::new)
            .map_err(|err| prompt_error(message, err))
    }

    /// A new password: typed hidden (nothing echoed, not even its length), checked by
    /// `validate` (asked again with the reason when it fails), then typed a second time;
    /// a mismatch starts over.
    pub(crate) fn new_password(
        &self,
        message: &str,
        again: &str,
        what: &str,
        env: &str,
        validate: impl Fn(&str) -> std::result::Result<(), String> + Clone + 'static,
    ) -> Result<tenancy::secrets::Password> {
        if !self.interactive {
            return Err(self.missing_password(what, env));
        }
        let validator = move |input: &str| {
            Ok(match validate(input) {
                Ok(()) => Validation::Valid,
                Err(message) => Validation::Invalid(message.into()),
            })
        };
        Password::new(message)
            .with_render_config(render_config())
            .with_display_mode(PasswordDisplayMode::Hidden)
            .with_custom_confirmation_message(again)
            .with_custom_confirmation_error_message("The passwords do not match; type it again")
            .with_validator(validator)
            .prompt()
            .map(tenancy::secrets::Password::new)
            .map_err(|err| prompt_error(message, err))
    }
}

fn prompt_error(message: &str, err: InquireError) -> Error {
    match err {
        InquireError::OperationCanceled | InquireError::OperationInterrupted => Error::Cancelled,
        source => Error::Prompt { prompt: message.to_owned(), source },
    }
}

/// Prompts read like the plain `Question: answer` lines of the documented transcript:
/// no `?`/`>` markers, and the answer on the prompt's line.
fn render_config() -> RenderConfig<'static> {
    RenderConfig::default_colored()
        .with_prompt_prefix(Styled::new(""))
        .with_answered_prompt_prefix(Styled::new(""))
        .with_canceled_prompt_indicator(Styled::new("<cancelled>"))
}
