//! Presenting a set of generated images: a contact sheet (one PNG), the JSON record of a
//! story or an interpolation (`story.json`, schema `docs/schemas/story.schema.json`),
//! and a self-contained HTML page that shows the panels with their prompts and scores.
pub mod page;
pub mod sheet;
pub mod story;

pub use page::{html_escape, render_page};
pub use sheet::contact_sheet;
pub use story::{Panel, Reference, StoryReport};
