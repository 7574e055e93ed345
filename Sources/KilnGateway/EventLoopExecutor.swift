import NIOCore

/// Runs a task's jobs on one NIO event loop. An SSE stream runs on its connection's event loop, so
/// a live event reaches the socket without crossing threads: the hub wakes the stream's task on
/// that loop, and the task's write goes straight into the channel (NIO's async writer skips its
/// hop when called on the loop).
// @unchecked: holds only an EventLoop (itself thread-safe); no mutable state.
final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
