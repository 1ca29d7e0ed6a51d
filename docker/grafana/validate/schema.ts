// Grafana's Dashboard type as a JSON document can satisfy it.
//
// The schema types some fields as TypeScript enums (`FieldColorModeId`, `ThresholdsMode`, ...). A JSON
// file holds their values as plain strings, which TypeScript never assigns to a string enum, so these
// types swap each string enum for the union of its values ("palette-classic" | "fixed" | ...). Every
// other constraint of the schema (required fields, value types, literal unions) is kept.
import type { Dashboard } from "@grafana/schema";

/** `T` with every string enum replaced by the union of its string values, deeply. */
export type JsonOf<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? JsonOf<U>[]
    : T extends object
      ? { [K in keyof T]: JsonOf<T[K]> }
      : T;

/** `JsonOf<T>` with string literal unions widened to `string`, as `resolveJsonModule` types a JSON file. */
export type Widened<T> = T extends string
  ? string
  : T extends readonly (infer U)[]
    ? Widened<U>[]
    : T extends object
      ? { [K in keyof T]: Widened<T[K]> }
      : T;

export type DashboardJson = JsonOf<Dashboard>;
export type DashboardJsonWidened = Widened<Dashboard>;
