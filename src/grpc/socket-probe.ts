/**
 * The end of a one-connection probe of a server: resolves with the first
 * answer only, destroys the socket and stops the timer then, and resolves
 * undefined after `timeoutMs` if nothing was learnt (the timer does not keep
 * the process alive). Returns the function that settles it.
 */
export function settleProbe(
  socket: { destroy(): void },
  timeoutMs: number,
  resolve: (answer: string | undefined) => void,
): (answer: string | undefined) => void {
  let settled = false;
  const done = (answer: string | undefined) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.destroy();
    resolve(answer);
  };
  const timer = setTimeout(() => done(undefined), timeoutMs);
  timer.unref();
  return done;
}
