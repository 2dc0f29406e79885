//! Ingredient normalisation for filters, and allergen categories for `--exclude`.
//!
//! An ingredient line becomes a sequence of lower-case singular word tokens with quantities, units and
//! parentheticals removed: `"2 1/2 cups (315 g) All-Purpose Flour, sifted"` -> `"all purpose flour sifted"`.
//! Everything else on the line is kept on purpose: an exclusion filter is a safety feature, and
//! `"1 egg beaten with 1 tbsp milk"` must match both `egg` and `dairy`.

use std::borrow::Cow;

/// Words that end in `s` but are singular (or uncountable) and must not lose it.
const INVARIANT: &[&str] = &[
    "couscous",
    "hummus",
    "asparagus",
    "molasses",
    "citrus",
    "octopus",
    "grits",
    "swiss",
    "brussels",
    "lemongrass",
    "watercress",
    "cress",
    "bass",
    "haricots",
    "series",
    "species",
    "quinoa",
    "chess",
    "gras",
    "tahinis",
    "bitters",
    "schnapps",
    "lentilles",
    "hollandaise",
    "mayonnaise",
    "aioli",
    "js",
    "us",
    "is",
    "as",
    "yes",
    "this",
    "plus",
    "less",
    "mass",
    "glass",
    "ananas",
    "frites",
    "nachos",
];

/// Irregular plurals.
const IRREGULAR: &[(&str, &str)] = &[
    ("leaves", "leaf"),
    ("loaves", "loaf"),
    ("halves", "half"),
    ("calves", "calf"),
    ("knives", "knife"),
    ("shelves", "shelf"),
    ("cookies", "cookie"),
    ("brownies", "brownie"),
    ("veggies", "veggie"),
    ("smoothies", "smoothie"),
    ("quiches", "quiche"),
    ("geese", "goose"),
    ("teeth", "tooth"),
    ("feet", "foot"),
    ("mice", "mouse"),
    ("children", "child"),
    ("oxen", "ox"),
    ("dice", "dice"),
    ("anchovies", "anchovy"),
    ("chilies", "chili"),
    ("chillies", "chilli"),
    ("species", "species"),
    ("fungi", "fungus"),
    ("cacti", "cactus"),
    ("panini", "panini"),
    ("pies", "pie"),
    ("ties", "tie"),
    ("lies", "lie"),
    ("courgettes", "courgette"),
    ("mousses", "mousse"),
    ("gateaux", "gateau"),
];

/// Units removed from ingredient lines (singular forms; plurals are singularised first).
const UNITS: &[&str] = &[
    "cup",
    "c",
    "tablespoon",
    "tbsp",
    "tbs",
    "tbl",
    "tb",
    "t",
    "teaspoon",
    "tsp",
    "ts",
    "ounce",
    "oz",
    "pound",
    "lb",
    "gram",
    "g",
    "gr",
    "kilogram",
    "kg",
    "milligram",
    "mg",
    "millilitre",
    "milliliter",
    "ml",
    "litre",
    "liter",
    "l",
    "dl",
    "cl",
    "pint",
    "pt",
    "quart",
    "qt",
    "gallon",
    "gal",
    "fl",
    "fluid",
    "pinch",
    "dash",
    "handful",
    "can",
    "tin",
    "jar",
    "package",
    "pkg",
    "pkt",
    "packet",
    "bag",
    "box",
    "bunch",
    "stick",
    "sprig",
    "slice",
    "piece",
    "clove",
    "head",
    "sheet",
    "drop",
    "inch",
    "cm",
    "mm",
    "envelope",
    "carton",
    "bottle",
    "container",
    "scoop",
    "splash",
    "knob",
    "stalk",
    "rib",
    "square",
];

/// Turns a (lower-case) word into its singular form: irregular table, invariant words, then the
/// English suffix rules (`-ies` -> `-y`, `-oes` -> `-o`, `-ches/-shes/-sses/-xes/-zes` -> drop `es`,
/// `-s` -> drop, but not after `s`, `u` or `i`).
pub fn singular(word: &str) -> Cow<'_, str> {
    if let Some((_, s)) = IRREGULAR.iter().find(|(p, _)| *p == word) {
        return Cow::Borrowed(s);
    }
    if word.len() <= 3 || INVARIANT.contains(&word) || !word.ends_with('s') {
        return Cow::Borrowed(word);
    }
    for (suffix, repl) in [
        ("ies", "y"),
        ("oes", "o"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("sses", "ss"),
        ("xes", "x"),
        ("zzes", "zz"),
    ] {
        if let Some(stem) = word.strip_suffix(suffix) {
            if stem.len() >= 2 {
                return Cow::Owned(format!("{stem}{repl}"));
            }
        }
    }
    if word.ends_with("ss") || word.ends_with("us") || word.ends_with("is") {
        return Cow::Borrowed(word);
    }
    Cow::Borrowed(&word[..word.len() - 1])
}

fn is_quantity(tok: &str) -> bool {
    let t = tok.trim_matches(|c: char| c == '.' || c == '-');
    !t.is_empty()
        && t.chars().all(|c| {
            c.is_ascii_digit()
                || matches!(c, '/' | '.' | ',' | '-' | '⁄' | 'x')
                || ('¼'..='¾').contains(&c)
                || ('⅐'..='⅞').contains(&c)
        })
        && t.chars()
            .any(|c| c.is_ascii_digit() || ('¼'..='¾').contains(&c) || ('⅐'..='⅞').contains(&c))
}

/// The normalised tokens of one ingredient line (see the module docs).
pub fn ingredient_tokens(line: &str) -> Vec<String> {
    let lower = line.to_lowercase();
    // Drop parentheticals and bracketed notes, tolerating unbalanced brackets.
    let mut plain = String::with_capacity(lower.len());
    let mut depth = 0usize;
    for c in lower.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    // Split numbers glued to units ("200g", "1.5kg") and words on anything but letters/digits.
    let mut raw: Vec<String> = Vec::new();
    for w in plain.split(|c: char| !(c.is_alphanumeric() || matches!(c, '/' | '.' | '⁄'))) {
        let w = w.trim_matches('.');
        if w.is_empty() {
            continue;
        }
        let split = w.find(|c: char| {
            c.is_alphabetic() && !('¼'..='¾').contains(&c) && !('⅐'..='⅞').contains(&c)
        });
        match split {
            Some(i) if i > 0 && is_quantity(&w[..i]) => {
                raw.push(w[..i].to_string());
                raw.push(w[i..].to_string());
            }
            _ => raw.push(w.to_string()),
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut after_qty = true; // a unit at the very start counts too ("cup flour")
    for w in raw {
        if is_quantity(&w) || w == "to" && after_qty {
            after_qty = true;
            continue;
        }
        let s = singular(&w).into_owned();
        if after_qty && UNITS.contains(&s.as_str()) {
            continue;
        }
        after_qty = false;
        if s.chars().any(char::is_alphabetic) {
            out.push(s);
        }
    }
    out
}

/// The normalised form of one ingredient line: its tokens joined by single spaces.
pub fn normalise_ingredient(line: &str) -> String {
    ingredient_tokens(line).join(" ")
}

/// An allergen or diet category usable in `--exclude`.
#[derive(Debug)]
pub struct Category {
    /// Names that select it (`shellfish`, `nut`, `tree nut`, ...), normalised.
    pub names: &'static [&'static str],
    /// Ingredient words/phrases that belong to it.
    pub terms: &'static [&'static str],
    /// Phrases that contain a term but are not in the category (`coconut milk` for dairy); a term
    /// match inside one of these is ignored.
    pub except: &'static [&'static str],
}

/// The built-in categories.
pub const CATEGORIES: &[Category] = &[
    Category {
        names: &["shellfish", "crustacean", "seafood shellfish"],
        terms: &[
            "shrimp",
            "prawn",
            "crab",
            "lobster",
            "clam",
            "mussel",
            "oyster",
            "scallop",
            "crayfish",
            "crawfish",
            "langoustine",
            "cockle",
            "whelk",
            "krill",
        ],
        except: &["oyster mushroom", "oyster sauce free"],
    },
    Category {
        names: &["nut", "tree nut", "treenut"],
        terms: &[
            "nut",
            "almond",
            "walnut",
            "pecan",
            "cashew",
            "pistachio",
            "hazelnut",
            "filbert",
            "macadamia",
            "brazil nut",
            "pine nut",
            "chestnut",
            "praline",
            "marzipan",
            "frangipane",
            "gianduja",
            "nutella",
            "amaretto",
        ],
        except: &["nut free", "water chestnut"],
    },
    Category {
        names: &["peanut", "groundnut"],
        terms: &["peanut", "groundnut", "satay"],
        except: &["peanut free"],
    },
    Category {
        names: &["dairy", "milk", "lactose"],
        terms: &[
            "milk",
            "butter",
            "buttermilk",
            "cream",
            "cheese",
            "yogurt",
            "yoghurt",
            "ghee",
            "whey",
            "casein",
            "curd",
            "kefir",
            "parmesan",
            "parmigiano",
            "mozzarella",
            "ricotta",
            "mascarpone",
            "cheddar",
            "feta",
            "gruyere",
            "gruyère",
            "brie",
            "paneer",
            "creme fraiche",
            "crème fraîche",
            "half and half",
            "quark",
            "burrata",
            "gouda",
            "pecorino",
            "custard",
            "gelato",
            "ice cream",
        ],
        except: &[
            "coconut milk",
            "almond milk",
            "soy milk",
            "soya milk",
            "oat milk",
            "rice milk",
            "cashew milk",
            "coconut cream",
            "peanut butter",
            "almond butter",
            "cashew butter",
            "nut butter",
            "apple butter",
            "cocoa butter",
            "shea butter",
            "butter bean",
            "cream of tartar",
            "dairy free",
            "bean curd",
            "vegan butter",
            "vegan cheese",
        ],
    },
    Category {
        names: &["gluten", "wheat"],
        terms: &[
            "wheat",
            "flour",
            "barley",
            "rye",
            "spelt",
            "bread",
            "breadcrumb",
            "panko",
            "pasta",
            "noodle",
            "spaghetti",
            "macaroni",
            "penne",
            "couscous",
            "semolina",
            "bulgur",
            "farro",
            "seitan",
            "soy sauce",
            "beer",
            "malt",
            "cracker",
            "pita",
            "bun",
            "dough",
            "pastry",
            "crouton",
            "cake",
            "cookie",
            "biscuit",
            "orzo",
            "ramen",
            "udon",
            "lasagna",
            "lasagne",
            "fettuccine",
            "linguine",
            "ravioli",
            "tortellini",
            "baguette",
            "brioche",
            "croissant",
            "graham",
            "roll",
            "farina",
            "durum",
            "kamut",
            "pretzel",
            "phyllo",
            "filo",
            "wonton",
            "dumpling",
            "tortilla",
        ],
        except: &[
            "rice flour",
            "almond flour",
            "coconut flour",
            "corn flour",
            "chickpea flour",
            "tapioca flour",
            "potato flour",
            "rice noodle",
            "glass noodle",
            "corn tortilla",
            "gluten free",
            "cauliflower",
            "egg roll",
        ],
    },
    Category {
        names: &["egg"],
        terms: &[
            "egg",
            "yolk",
            "mayonnaise",
            "mayo",
            "meringue",
            "aioli",
            "albumen",
        ],
        except: &["egg free", "eggless"],
    },
    Category {
        names: &["fish"],
        terms: &[
            "fish",
            "salmon",
            "tuna",
            "cod",
            "anchovy",
            "sardine",
            "trout",
            "halibut",
            "tilapia",
            "mackerel",
            "haddock",
            "snapper",
            "bass",
            "catfish",
            "swordfish",
            "herring",
            "pollock",
            "sole",
            "mahi",
            "worcestershire",
            "bonito",
            "caviar",
            "roe",
            "eel",
            "monkfish",
            "hake",
            "pike",
            "perch",
            "bream",
            "carp",
            "dashi",
            "katsuobushi",
        ],
        except: &["fish free"],
    },
    Category {
        names: &["soy", "soya"],
        terms: &[
            "soy", "soya", "soybean", "tofu", "edamame", "miso", "tempeh", "tamari", "shoyu",
            "natto",
        ],
        except: &["soy free"],
    },
    Category {
        names: &["sesame"],
        terms: &[
            "sesame", "tahini", "benne", "gomashio", "halva", "halvah", "hummus", "za atar",
            "zaatar",
        ],
        except: &["sesame free"],
    },
];

/// The category named `name` (case, plural and spacing ignored: `Tree Nuts`, `shellfish`).
pub fn category(name: &str) -> Option<&'static Category> {
    let n = normalise_ingredient(name);
    CATEGORIES
        .iter()
        .find(|c| c.names.iter().any(|x| normalise_ingredient(x) == n))
}

#[derive(Debug, Clone)]
struct Term {
    asked: String,
    tokens: Vec<String>,
    except: Vec<Vec<String>>,
}

/// An exclusion filter: a recipe is excluded when any of its normalised ingredients contains a term
/// (whole words, in order) of an excluded category or an excluded plain ingredient name.
#[derive(Debug, Clone, Default)]
pub struct ExcludeFilter {
    terms: Vec<Term>,
}

fn tokens_of(s: &str) -> Vec<String> {
    normalise_ingredient(s)
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl ExcludeFilter {
    /// Builds a filter from `--exclude` items: category names expand to their terms, anything else is
    /// an ingredient name. Blank items are ignored.
    pub fn new<S: AsRef<str>>(items: &[S]) -> Self {
        let mut terms = Vec::new();
        for item in items {
            let asked = item.as_ref().trim().to_string();
            if asked.is_empty() {
                continue;
            }
            match category(&asked) {
                Some(c) => {
                    let except: Vec<Vec<String>> = c.except.iter().map(|e| tokens_of(e)).collect();
                    for t in c.terms {
                        terms.push(Term {
                            asked: asked.clone(),
                            tokens: tokens_of(t),
                            except: except.clone(),
                        });
                    }
                }
                None => terms.push(Term {
                    tokens: tokens_of(&asked),
                    asked,
                    except: Vec::new(),
                }),
            }
        }
        terms.retain(|t| !t.tokens.is_empty());
        ExcludeFilter { terms }
    }

    /// True when the filter excludes nothing.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The `--exclude` item that rules out a recipe with these normalised ingredients (as returned by
    /// [`normalise_ingredient`]), or `None` if it passes.
    pub fn excluded_by<S: AsRef<str>>(&self, normalised_ingredients: &[S]) -> Option<&str> {
        for ing in normalised_ingredients {
            let toks: Vec<&str> = ing.as_ref().split(' ').collect();
            for term in &self.terms {
                for pos in find_all(&toks, &term.tokens) {
                    let excused = term.except.iter().any(|ex| {
                        find_all(&toks, ex)
                            .any(|ep| ep <= pos && pos + term.tokens.len() <= ep + ex.len())
                    });
                    if !excused {
                        return Some(&term.asked);
                    }
                }
            }
        }
        None
    }
}

fn find_all<'a>(hay: &'a [&str], needle: &'a [String]) -> impl Iterator<Item = usize> + 'a {
    (0..(hay.len() + 1).saturating_sub(needle.len()))
        .filter(move |&i| needle.iter().zip(&hay[i..]).all(|(a, b)| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singulars() {
        for (p, s) in [
            ("tomatoes", "tomato"),
            ("berries", "berry"),
            ("nuts", "nut"),
            ("peaches", "peach"),
            ("radishes", "radish"),
            ("leaves", "leaf"),
            ("olives", "olive"),
            ("cloves", "clove"),
            ("cookies", "cookie"),
            ("couscous", "couscous"),
            ("hummus", "hummus"),
            ("asparagus", "asparagus"),
            ("molasses", "molasses"),
            ("eggs", "egg"),
            ("cheeses", "cheese"),
            ("sauces", "sauce"),
            ("prawns", "prawn"),
            ("anchovies", "anchovy"),
            ("pies", "pie"),
            ("peas", "pea"),
            ("glass", "glass"),
        ] {
            assert_eq!(singular(p), s, "{p}");
        }
    }

    #[test]
    fn lines() {
        assert_eq!(
            normalise_ingredient("2 1/2 cups (315 g) All-Purpose Flour, sifted"),
            "all purpose flour sifted"
        );
        assert_eq!(normalise_ingredient("200g Raw Prawns"), "raw prawn");
        assert_eq!(normalise_ingredient("6 to 8 tbsp ice water"), "ice water");
        assert_eq!(normalise_ingredient("½ tsp ground cloves"), "ground clove");
        assert_eq!(
            normalise_ingredient("2 cloves garlic, minced"),
            "garlic minced"
        );
        assert_eq!(normalise_ingredient("1 (14 oz.) can Chickpeas"), "chickpea");
        assert_eq!(normalise_ingredient("Salt and pepper"), "salt and pepper");
        assert_eq!(
            normalise_ingredient("1 c. firmly packed brown sugar"),
            "firmly packed brown sugar"
        );
    }

    fn excl(items: &[&str], ings: &[&str]) -> Option<String> {
        let n: Vec<String> = ings.iter().map(|i| normalise_ingredient(i)).collect();
        ExcludeFilter::new(items)
            .excluded_by(&n)
            .map(str::to_string)
    }

    #[test]
    fn allergen_categories() {
        assert_eq!(
            excl(&["shellfish"], &["1 lb Shrimps, peeled"]).as_deref(),
            Some("shellfish")
        );
        for s in [
            "prawns",
            "crab meat",
            "lobster tail",
            "clams",
            "mussels",
            "oysters",
            "scallops",
        ] {
            assert!(excl(&["shellfish"], &[s]).is_some(), "{s}");
        }
        assert!(excl(&["shellfish"], &["oyster mushrooms"]).is_none());
        assert!(excl(&["nut"], &["1/2 c. broken nuts (pecans)"]).is_some());
        assert!(excl(&["tree nuts"], &["100 g ground almonds"]).is_some());
        assert!(excl(
            &["nut"],
            &["1/4 tsp ground nutmeg", "1 coconut", "butternut squash"]
        )
        .is_none());
        assert!(excl(&["peanut"], &["2 tbsp Peanut Butter"]).is_some());
        assert!(excl(&["peanuts"], &["2 tbsp peanuts"]).is_some());
        assert!(excl(&["dairy"], &["1 cup (226 g) cold unsalted butter"]).is_some());
        assert!(excl(
            &["dairy"],
            &[
                "1 can coconut milk",
                "2 tbsp peanut butter",
                "1 tsp cream of tartar"
            ]
        )
        .is_none());
        assert!(excl(&["dairy"], &["1 large egg beaten with 1 tbsp milk"]).is_some());
        assert!(excl(&["egg"], &["1 large egg beaten with 1 tbsp milk"]).is_some());
        assert!(excl(&["egg"], &["1 eggplant"]).is_none());
        assert!(excl(&["gluten"], &["2 cups all-purpose flour"]).is_some());
        assert!(excl(&["gluten"], &["1 cup rice flour", "200 g rice noodles"]).is_none());
        assert!(excl(&["fish"], &["2 anchovies"]).is_some());
        assert!(excl(&["fish"], &["1 lb shellfish mix"]).is_none());
        assert!(excl(&["soy"], &["2 tbsp soy sauce"]).is_some());
        assert!(excl(&["gluten"], &["2 tbsp soy sauce"]).is_some());
        assert!(excl(&["sesame"], &["1 tbsp tahini"]).is_some());
        assert!(excl(&["cilantro"], &["1 bunch Cilantro"]).is_some());
        assert!(excl(&["pine nuts"], &["30 g pine nuts"]).is_some());
        assert!(excl(&[], &["anything"]).is_none());
    }
}
