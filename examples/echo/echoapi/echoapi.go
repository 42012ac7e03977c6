// Package echoapi holds the wire types of the example echo service
// (examples/echo), so that clients and demos can call it:
//
//	var reply echoapi.Reply
//	err := c.Call(ctx, echoapi.Method, &echoapi.Args{Msg: "hi"}, &reply, rpcclient.Idempotent())
//
// The service speaks net/rpc's gob format (what rpcclient uses). Echo is
// idempotent: it is safe to retry.
package echoapi

import "time"

const (
	// ServiceName is the net/rpc name the service is registered under.
	ServiceName = "Echo"
	// Method is the one method of the service, "Echo.Echo".
	Method = ServiceName + ".Echo"
	// MaxSleep caps Args.Sleep: a longer sleep is shortened to it, so a
	// client cannot park a server goroutine for hours.
	MaxSleep = 30 * time.Second
)

// Args are the arguments of Echo.Echo. The zero value echoes an empty message
// at once.
type Args struct {
	// Msg is copied into Reply.Msg.
	Msg string
	// Sleep makes the server wait this long before it answers, to simulate a
	// slow call. Zero means no wait; values above MaxSleep are capped. A
	// server that shuts down ends the wait early and the call fails.
	Sleep time.Duration
}

// Reply is the reply of Echo.Echo.
type Reply struct {
	// Msg is Args.Msg.
	Msg string
	// Server is the name of the instance that answered (its -name flag).
	Server string
}
