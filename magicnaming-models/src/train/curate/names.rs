//! Steps 1 and 2 of LaionCele's construction (`docs/METHOD.md`, "The LaionCele dataset"):
//! finding listed people's names in captions, and merging each person's aliases into one
//! name.
//!
//! Matching is case- and accent-insensitive and by whole words: captions and names are
//! decomposed (Unicode NFKD), stripped of combining marks, lower-cased and split into runs
//! of letters and digits, so "BEYONCÉ's" contains the word "beyonce". At each word of a
//! caption the longest listed name (or alias) starting there wins ("Michael B. Jordan"
//! before "Michael Jordan" never overlaps wrongly), and matching continues after it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::train::manifest::clean_name;
use crate::{ModelError, Result};

/// The words of `text`: NFKD, combining marks dropped, lower case, runs of alphanumerics.
pub fn words(text: &str) -> Vec<String> {
    let folded: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The people to look for: each with its spellings (the name first, then its aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameList {
    /// The file they came from.
    pub path: PathBuf,
    /// Canonical names (cleaned), in file order.
    pub names: Vec<String>,
    /// Word sequence of every spelling -> (person, whether it is an alias).
    spellings: BTreeMap<Vec<String>, (usize, bool)>,
    /// The longest spelling, in words.
    longest: usize,
}

impl NameList {
    /// Reads a names file: one person per line, `Name` or `Name<TAB>alias<TAB>alias...`;
    /// blank lines are skipped.
    ///
    /// # Errors
    /// A missing or non-UTF-8 file, no names at all, a name or alias without any letter or
    /// digit, or a spelling listed for two people (both lines are named). A person's spellings
    /// that match the same words ("Zoë Kravitz", "Zoe Kravitz") count once.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// [`Self::read`] on text already read.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |line: usize, m: String| ModelError::Manifest {
            path: path.to_path_buf(),
            line,
            message: m,
        };
        let mut names = Vec::new();
        let mut spellings: BTreeMap<Vec<String>, (usize, bool)> = BTreeMap::new();
        let mut line_of: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let person = names.len();
            for (j, spelling) in line.split('\t').enumerate() {
                let clean = clean_name(spelling);
                if clean.is_empty() && j > 0 {
                    continue; // a trailing tab
                }
                let w = words(&clean);
                if w.is_empty() {
                    return Err(bad(
                        line_no,
                        format!("{spelling:?} has no letter or digit to match"),
                    ));
                }
                if let Some(&(other, _)) = spellings.get(&w)
                    && other == person
                {
                    continue; // the same person's spelling twice (e.g. with and without accents)
                }
                if let Some(first) = line_of.get(&w) {
                    return Err(bad(
                        line_no,
                        format!(
                            "{clean:?} is listed twice (also on line {first}): each spelling must name one person once"
                        ),
                    ));
                }
                if j == 0 {
                    names.push(clean);
                }
                line_of.insert(w.clone(), line_no);
                spellings.insert(w, (person, j > 0));
            }
        }
        if names.is_empty() {
            return Err(ModelError::config(path, "the names file lists no names"));
        }
        let longest = spellings.keys().map(Vec::len).max().unwrap_or(1);
        Ok(Self {
            path: path.to_path_buf(),
            names,
            spellings,
            longest,
        })
    }

    /// The people a caption names, in order of first mention, each once; and whether an
    /// alias was how one of them was found.
    pub fn find(&self, caption: &str) -> Vec<Found> {
        let w = words(caption);
        let mut found: Vec<Found> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut i = 0;
        while i < w.len() {
            let mut matched = None;
            for len in (1..=self.longest.min(w.len() - i)).rev() {
                if let Some(&(person, alias)) = self.spellings.get(&w[i..i + len]) {
                    matched = Some((len, person, alias));
                    break;
                }
            }
            match matched {
                Some((len, person, alias)) => {
                    if seen.insert(person) {
                        found.push(Found { person, alias });
                    }
                    i += len;
                }
                None => i += 1,
            }
        }
        found
    }
}

/// A person found in a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index into [`NameList::names`].
    pub person: usize,
    /// Found through one of its aliases.
    pub alias: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> NameList {
        NameList::parse(text, Path::new("names.txt")).unwrap()
    }

    fn names(l: &NameList, caption: &str) -> Vec<String> {
        l.find(caption)
            .iter()
            .map(|f| l.names[f.person].clone())
            .collect()
    }

    #[test]
    fn case_accents_whole_words_longest_first() {
        let l = list("Beyoncé\tBeyonce Knowles\nMichael Jordan\nMichael B. Jordan\nAnn\n\n");
        assert_eq!(
            l.names,
            ["Beyoncé", "Michael Jordan", "Michael B. Jordan", "Ann"]
        );
        assert_eq!(names(&l, "BEYONCE's new look"), ["Beyoncé"]);
        assert_eq!(names(&l, "beyoncé knowles, live"), ["Beyoncé"]);
        assert!(l.find("beyonce knowles").iter().all(|f| f.alias));
        // Whole words: "Anna" and "Annex" are not "Ann".
        assert!(names(&l, "Anna at the Annex").is_empty());
        // Punctuation separates words, as a regex's \b does.
        assert_eq!(names(&l, "Ann-Marie"), ["Ann"]);
        // The longest spelling wins; no overlap.
        assert_eq!(
            names(&l, "Michael B. Jordan at the premiere"),
            ["Michael B. Jordan"]
        );
        assert_eq!(
            names(&l, "michael jordan and ANN and Michael Jordan again"),
            ["Michael Jordan", "Ann"]
        );
    }

    #[test]
    fn bad_name_files_are_named() {
        let e = NameList::parse("", Path::new("n.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no names"), "{e}");
        let e = NameList::parse("Ann\nann\n", Path::new("n.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice (also on line 1)"), "{e}");
        let e = NameList::parse("Bob\t  ...  \n", Path::new("n.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no letter or digit"), "{e}");
    }
}
