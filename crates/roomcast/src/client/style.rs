//! Colors on a terminal, plain text elsewhere (and with NO_COLOR).

use std::io::IsTerminal;

use anstyle::{AnsiColor, Effects, Style};

/// Text styles for one output stream.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    on: bool,
}

impl Palette {
    pub fn stdout() -> Self {
        Self {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn stderr() -> Self {
        Self {
            on: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.on {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    pub fn dim(&self, t: &str) -> String {
        self.paint(Style::new().effects(Effects::DIMMED), t)
    }

    pub fn bold(&self, t: &str) -> String {
        self.paint(Style::new().effects(Effects::BOLD), t)
    }

    pub fn green(&self, t: &str) -> String {
        self.paint(Style::new().fg_color(Some(AnsiColor::Green.into())), t)
    }

    pub fn red(&self, t: &str) -> String {
        self.paint(Style::new().fg_color(Some(AnsiColor::Red.into())), t)
    }

    pub fn yellow(&self, t: &str) -> String {
        self.paint(Style::new().fg_color(Some(AnsiColor::Yellow.into())), t)
    }
}
