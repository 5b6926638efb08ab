// One error style for the library: every message starts with "easyinv: " (added here, once); an argument of the
// wrong type is a TypeError, a value out of its range a RangeError, anything else (a file, a bundle, a run) an Error.
const prefixed = (message: string) => (message.startsWith('easyinv: ') ? message : `easyinv: ${message}`);

export function typeError(message: string): never {
  throw new TypeError(prefixed(message));
}

export function rangeError(message: string): never {
  throw new RangeError(prefixed(message));
}

export function failure(message: string, options?: ErrorOptions): Error {
  return new Error(prefixed(message), options);
}

/**
 * An error about one option, named as the caller writes it in the API (`guidance`, `regularization.steps`,
 * `offsets[2]`): the message starts with that name, and `option` carries it so that the command line can put the
 * flag it was given as in its place (commands/common.ts).
 */
export function optionError(option: string, rule: string, kind: new (message: string) => Error = RangeError): never {
  throw Object.assign(new kind(prefixed(`${option} ${rule}`)), { option });
}

/** The error an aborted run rejects with: Node's own AbortError (a DOMException), carrying the signal's reason. */
export function abortError(message: string, reason?: unknown): DOMException {
  const error = new DOMException(prefixed(message), 'AbortError');
  if (reason !== undefined) Object.defineProperty(error, 'cause', { value: reason, configurable: true, writable: true });
  return error;
}

/** Throws the AbortError `message` when `signal` was aborted (the commands' and compare's check between steps). */
export function throwIfAborted(signal: AbortSignal | undefined, message: string): void {
  if (signal?.aborted) throw abortError(message, signal.reason);
}
