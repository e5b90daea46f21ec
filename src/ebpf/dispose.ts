/**
 * The one place that makes sure Symbol.dispose exists at runtime (Node 20
 * before 20.4 lacks it), so that every owner can implement it and `using` works.
 * Imported for its side effect by every module that defines a disposable class.
 */
(Symbol as { dispose?: symbol }).dispose ??= Symbol.for('nodejs.dispose');

export {};
