//! The types that cross between the op library's C++ and its Rust, defined once, here.
//!
//! `build.rs` includes this file and writes the C++ header `asymvalley_abi.h` from these
//! definitions: the enums with their values, the structs with their fields, and a
//! `static_assert` on every field offset and struct size as Rust laid them out, so a C++ side
//! that drifted from this file does not compile. No `unsafe` and no crate items here (the build
//! script compiles this file on its own).

/// A `#[repr(i32)]` enum and the table of its C++ spelling.
macro_rules! c_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$m])*
        #[repr(i32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $variant = $value,)*
        }
        impl $name {
            /// Each variant's name and value, for the generated C++ `enum class`.
            #[allow(dead_code)]
            pub const C_VARIANTS: &'static [(&'static str, i32)] = &[$((stringify!($variant), $value),)*];
        }
    };
}

/// A `#[repr(C)]` struct and the table of its C++ fields (name, C++ type, offset).
macro_rules! c_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident: $rty:ty => $cty:literal,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            $($(#[$fm])* pub $field: $rty,)*
        }
        impl $name {
            /// Each field's name, C++ type and byte offset, for the generated C++ struct.
            #[allow(dead_code)]
            pub const C_FIELDS: &'static [(&'static str, &'static str, usize)] =
                &[$((stringify!($field), $cty, std::mem::offset_of!($name, $field)),)*];
            /// The struct's size in bytes.
            #[allow(dead_code)]
            pub const C_SIZE: usize = std::mem::size_of::<$name>();
        }
    };
}

c_enum! {
    /// What one `Averager.update` does (the Rust [`avcore::average::Action`], as a code).
    AsvAction {
        /// Nothing.
        Skip = 0,
        /// Copy the model without counting it (EMA before `update_after_step`).
        Mirror = 1,
        /// Copy the model: the first average (`n_averaged` becomes 1).
        Copy = 2,
        /// `avg <- avg + weight * (params - avg)`, and `n_averaged += 1`.
        Lerp = 3,
    }
}

c_enum! {
    /// The averaging rule.
    AsvMode {
        /// Equal-weight running mean.
        Swa = 0,
        /// Exponential moving average.
        Ema = 1,
    }
}

c_enum! {
    /// The EMA decay warmup.
    AsvWarmup {
        /// A fixed decay.
        None = 0,
        /// `min(decay, (1 + t) / (10 + t))`.
        Tf = 1,
        /// `1 - (1 + t / inv_gamma)^-power`, clamped to `[min_decay, decay]`.
        Power = 2,
    }
}

c_struct! {
    /// An `Averager`'s configuration, parsed and validated once, when the class is constructed;
    /// every update passes it back as it is. Only Rust writes it (`asymvalley_op_rule_parse`),
    /// so its enums always hold one of their values.
    AsvRule {
        /// SWA or EMA.
        mode: AsvMode => "AsvMode",
        /// The EMA warmup (ignored for SWA).
        warmup: AsvWarmup => "AsvWarmup",
        /// The EMA decay (its ceiling with a warmup).
        decay: f64 => "double",
        /// The `power` warmup's `inv_gamma`.
        inv_gamma: f64 => "double",
        /// The `power` warmup's exponent.
        power: f64 => "double",
        /// The `power` warmup's floor.
        min_decay: f64 => "double",
        /// Updates before averaging starts.
        update_after_step: u64 => "uint64_t",
        /// Average on every `update_every`-th update from then on (>= 1).
        update_every: u64 => "uint64_t",
    }
}

c_struct! {
    /// What one update does, as [`AsvRule`] decides it from the counters.
    AsvPlan {
        /// Skip, mirror, copy or lerp.
        action: AsvAction => "AsvAction",
        /// The lerp weight (1 for a copy or mirror, 0 for a skip).
        weight: f64 => "double",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpp_tables_hold_each_variant_with_its_rust_value() {
        let actions = [
            AsvAction::Skip,
            AsvAction::Mirror,
            AsvAction::Copy,
            AsvAction::Lerp,
        ];
        let names: Vec<(String, i32)> = actions
            .iter()
            .map(|a| (format!("{a:?}"), *a as i32))
            .collect();
        let table: Vec<(String, i32)> = AsvAction::C_VARIANTS
            .iter()
            .map(|&(n, v)| (n.to_owned(), v))
            .collect();
        assert_eq!(table, names);
        assert_eq!(
            AsvMode::C_VARIANTS,
            &[("Swa", AsvMode::Swa as i32), ("Ema", AsvMode::Ema as i32)]
        );
        let w = AsvWarmup::C_VARIANTS;
        assert_eq!(
            w,
            &[
                ("None", 0),
                ("Tf", AsvWarmup::Tf as i32),
                ("Power", AsvWarmup::Power as i32)
            ]
        );
    }

    #[test]
    fn the_field_tables_match_the_rust_layout() {
        // Every field, in declaration order, with strictly increasing offsets inside the struct:
        // the generated static_asserts check these very numbers against the C++ compiler's.
        for (fields, size) in [
            (AsvRule::C_FIELDS, AsvRule::C_SIZE),
            (AsvPlan::C_FIELDS, AsvPlan::C_SIZE),
        ] {
            assert!(fields.windows(2).all(|w| w[0].2 < w[1].2), "{fields:?}");
            assert!(fields.iter().all(|f| f.2 < size));
        }
        let names: Vec<&str> = AsvRule::C_FIELDS.iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "mode",
                "warmup",
                "decay",
                "inv_gamma",
                "power",
                "min_decay",
                "update_after_step",
                "update_every"
            ]
        );
        assert_eq!(
            AsvRule::C_FIELDS[6],
            (
                "update_after_step",
                "uint64_t",
                std::mem::offset_of!(AsvRule, update_after_step)
            )
        );
        assert_eq!(AsvPlan::C_SIZE, std::mem::size_of::<AsvPlan>());
        assert_eq!(
            AsvPlan::C_FIELDS[1].2,
            8,
            "a double after a 4-byte enum is aligned to 8"
        );
    }
}
