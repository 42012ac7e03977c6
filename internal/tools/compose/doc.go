// Package compose checks the repository's docker-compose.yml against the
// programs it runs. It is a separate module so that compose-go stays out of
// the library's dependency graph. Run it from this directory:
//
//	cd internal/tools/compose && go test ./...
//
// The file is loaded and validated by compose-go (the loader Docker Compose
// itself uses: schema, interpolation, consistency). Then, for every service
// built from one of our Dockerfiles, its command must parse with the flags
// the program really defines, and its environment may only hold variables
// the program reads. The flags are taken from the programs themselves: each
// one is built with `go build` and run with -h, and the flag package's
// listing (PrintDefaults) is turned back into a flag.FlagSet of the same
// names and types, which then parses the compose command exactly as the
// program would. Reading the running program's own -h, not its source, keeps
// the check true however the flags are declared. A health check that runs
// the dialtone CLI is checked the same way against its subcommand's flags.
package compose
