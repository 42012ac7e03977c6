package compose

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is the root of the dialtone module, relative to this directory.
const repoRoot = "../../.."

// program is one of our commands as a compose service runs it.
type program struct {
	pkg        string   // Go package, relative to repoRoot
	binary     string   // its path inside the image (the ENTRYPOINT)
	env        []string // environment variables it reads
	positional bool     // whether it takes arguments after the flags
}

// The programs, by the Dockerfile that builds them (relative to repoRoot).
var (
	echoProgram = program{
		pkg: "./examples/echo", binary: "/echo",
		env: []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "ETCD_ENDPOINTS"},
	}
	clientProgram = program{
		pkg: "./examples/client", binary: "/client",
		env: []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "ETCD_ENDPOINTS", "DIALTONE_TARGET"},
	}
	dialtoneProgram = program{pkg: "./cmd/dialtone", binary: "/dialtone", positional: true}

	byDockerfile = map[string]program{
		"examples/echo/Dockerfile":   echoProgram,
		"examples/client/Dockerfile": clientProgram,
	}
)

// loadCompose loads and validates compose YAML as `docker compose` would,
// with an empty environment so that the host's variables play no part.
func loadCompose(t *testing.T, content []byte) (*types.Project, error) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml"), Content: content}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("dialtone", true) })
}

func readCompose(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flagSpec maps a flag name to its type word in PrintDefaults' listing:
// "" for a bool, else "duration", "int", ... or a name from the usage text
// (a string).
type flagSpec map[string]string

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	helpMu    sync.Mutex
	helpCache = map[string]string{}
)

// help builds p (once per test run) and returns what `binary args... -h`
// prints.
func help(t *testing.T, p program, args ...string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dialtone-compose-check-")
		if buildErr != nil {
			return
		}
		for _, q := range []program{echoProgram, clientProgram, dialtoneProgram} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, filepath.Base(q.binary)), q.pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", q.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	key := p.binary + " " + strings.Join(args, " ")
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[key]; ok {
		return h
	}
	cmd := exec.Command(filepath.Join(buildDir, filepath.Base(p.binary)), append(args, "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -h: %v (want exit status 0)\n%s", key, err, out)
	}
	helpCache[key] = string(out)
	return string(out)
}

// flagLine matches a flag in the flag package's PrintDefaults listing:
// "  -name type", or "  -x\tusage" for a one-letter flag without a type.
var flagLine = regexp.MustCompile(`^  -([^\s=]+)(?: ([^\t]+))?(?:\t.*)?$`)

// parseHelp extracts the flags from a -h listing.
func parseHelp(text string) flagSpec {
	spec := flagSpec{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			spec[m[1]] = m[2]
		}
	}
	return spec
}

// flagSet rebuilds a FlagSet with the names and value types of spec, so that
// it parses a command line as the program's own FlagSet does: the same
// handling of -x, --x, -x=v, bool flags and "--", and the same value syntax.
func (spec flagSpec) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(discard{})
	for n, typ := range spec {
		switch typ {
		case "":
			fs.Bool(n, false, "")
		case "duration":
			fs.Duration(n, 0, "")
		case "int":
			fs.Int(n, 0, "")
		case "int64":
			fs.Int64(n, 0, "")
		case "uint":
			fs.Uint(n, 0, "")
		case "uint64":
			fs.Uint64(n, 0, "")
		case "float":
			fs.Float64(n, 0, "")
		default: // "string", or a name given in the usage text
			fs.String(n, "", "")
		}
	}
	return fs
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// checkArgs parses args with the flags of p (its subcommand sub, if any) and
// returns the positional arguments left.
func checkArgs(t *testing.T, p program, sub string, args []string) ([]string, error) {
	var helpArgs []string
	if sub != "" {
		helpArgs = []string{sub}
	}
	spec := parseHelp(help(t, p, helpArgs...))
	if len(spec) == 0 {
		t.Fatalf("%s %s -h lists no flags; the listing format changed?", p.binary, sub)
	}
	fs := spec.flagSet(strings.TrimSpace(p.binary + " " + sub))
	if err := fs.Parse(args); err != nil {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range spec {
				if !yield("-" + n) {
					return
				}
			}
		})
		return nil, fmt.Errorf("%s: %v (it defines %s)", fs.Name(), err, strings.Join(names, " "))
	}
	if !p.positional && fs.NArg() > 0 {
		return nil, fmt.Errorf("%s takes no arguments, but the command passes %q", fs.Name(), fs.Args())
	}
	return fs.Args(), nil
}

// checkProject returns every problem found in the services of project.
func checkProject(t *testing.T, project *types.Project) []error {
	t.Helper()
	var errs []error
	bad := func(service, format string, a ...any) {
		errs = append(errs, fmt.Errorf("service %s: %s", service, fmt.Sprintf(format, a...)))
	}
	for _, name := range []string{"consul", "etcd", "echo1", "echo2", "echo3", "client"} {
		if _, ok := project.Services[name]; !ok {
			bad(name, "missing")
		}
	}
	root, _ := filepath.Abs(repoRoot)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range project.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		svc := project.Services[name]
		for dep, d := range svc.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				bad(name, "depends_on %s with condition %q, want %s", dep, d.Condition, types.ServiceConditionHealthy)
			}
			if hc := project.Services[dep].HealthCheck; hc == nil || len(hc.Test) == 0 || hc.Disable {
				bad(name, "depends_on %s being healthy, but %s has no health check", dep, dep)
			}
		}
		if svc.Build == nil {
			continue
		}
		rel, err := filepath.Rel(root, filepath.Join(svc.Build.Context, svc.Build.Dockerfile))
		if err != nil {
			bad(name, "%v", err)
			continue
		}
		rel = filepath.ToSlash(rel)
		p, ok := byDockerfile[rel]
		if !ok {
			bad(name, "built from %s, which this check does not know; add it to byDockerfile", rel)
			continue
		}
		if err := checkDockerfile(rel, p); err != nil {
			bad(name, "%v", err)
		}
		if _, err := checkArgs(t, p, "", svc.Command); err != nil {
			bad(name, "command %q: %v", []string(svc.Command), err)
		}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range svc.Environment {
				if !yield(k) {
					return
				}
			}
		}) {
			if !slices.Contains(p.env, k) {
				bad(name, "environment variable %s is not read by %s (it reads %s)", k, p.pkg, strings.Join(p.env, ", "))
			} else if h := help(t, p); !strings.Contains(h, k) {
				bad(name, "%s reads %s but its -h does not mention it", p.pkg, k)
			}
		}
		if hc := svc.HealthCheck; hc != nil && len(hc.Test) > 1 && hc.Test[1] == dialtoneProgram.binary {
			if err := checkDialtoneHealth(t, hc.Test); err != nil {
				bad(name, "health check %q: %v", []string(hc.Test), err)
			}
		}
	}
	return errs
}

// checkDialtoneHealth checks ["CMD", "/dialtone", SUBCOMMAND, flags..., args...].
func checkDialtoneHealth(t *testing.T, test []string) error {
	if test[0] != "CMD" || len(test) < 3 {
		return errors.New(`want ["CMD", "/dialtone", "call", ...]`)
	}
	sub := test[2]
	if sub != "call" && sub != "watch" {
		return fmt.Errorf("dialtone has no subcommand %q for a health check", sub)
	}
	args, err := checkArgs(t, dialtoneProgram, sub, test[3:])
	if err != nil {
		return err
	}
	if sub == "call" {
		if len(args) < 2 || len(args) > 3 {
			return fmt.Errorf("dialtone call takes TARGET Service.Method [JSON], got %q", args)
		}
		if len(args) == 3 && !json.Valid([]byte(args[2])) {
			return fmt.Errorf("parameter %q is not JSON", args[2])
		}
	}
	return nil
}

// checkDockerfile checks that the Dockerfile builds p's package and runs its
// binary.
func checkDockerfile(rel string, p program) error {
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		return err
	}
	text := string(b)
	if !strings.Contains(text, " "+p.pkg) {
		return fmt.Errorf("%s does not build %s", rel, p.pkg)
	}
	if !strings.Contains(text, fmt.Sprintf("ENTRYPOINT [%q]", p.binary)) {
		return fmt.Errorf("%s: want ENTRYPOINT [%q]", rel, p.binary)
	}
	return nil
}

func TestComposeFile(t *testing.T) {
	project, err := loadCompose(t, readCompose(t))
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	for _, err := range checkProject(t, project) {
		t.Error(err)
	}
	// The registries are the official images with health checks.
	for name, image := range map[string]string{"consul": "hashicorp/consul:", "etcd": "gcr.io/etcd-development/etcd:"} {
		svc := project.Services[name]
		if !strings.HasPrefix(svc.Image, image) {
			t.Errorf("service %s: image %q, want %s...", name, svc.Image, image)
		}
	}
}

// The check catches mistakes: each case breaks a copy of the file in memory.
func TestComposeCheckCatchesMistakes(t *testing.T) {
	original := string(readCompose(t))
	for _, tc := range []struct {
		name, old, new string
		want           string // in the load error or in one of the problems
	}{
		{"unknown flag", `"-name", "echo1"`, `"-nmae", "echo1"`, "flag provided but not defined: -nmae"},
		{"flag of another program", `"-n", "0"`, `"-ttl", "0"`, "flag provided but not defined: -ttl"},
		{"bad duration", `"-interval", "1s"`, `"-interval", "soon"`, `invalid value "soon" for flag -interval`},
		{"missing value", `"-name", "echo3", "-zone", "b"]`, `"-name", "echo3", "-zone"]`, "flag needs an argument: -zone"},
		{"stray argument", `"-name", "echo2", "-zone", "a"]`, `"-name", "echo2", "-zone", "a", "extra"]`, "takes no arguments"},
		{"unknown environment variable", "DIALTONE_TARGET: consul://consul:8500/echo", "DIALTONE_TARGET: consul://consul:8500/echo\n      CONSUL_ADDR: consul:8500", "CONSUL_ADDR is not read"},
		{"variable of another program", "CONSUL_HTTP_ADDR: consul:8500", "CONSUL_HTTP_ADDR: consul:8500\n    DIALTONE_TARGET: x", "DIALTONE_TARGET is not read by ./examples/echo"},
		{"health check flag", `"call", "-timeout", "2s"`, `"call", "-deadline", "2s"`, "flag provided but not defined: -deadline"},
		{"unhealthy dependency", "      echo3:\n        condition: service_healthy", "      echo3:\n        condition: service_started", "condition \"service_started\""},
		{"schema", "condition: service_healthy", "condition: when_ready", "must be one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(original, tc.old) {
				t.Fatalf("docker-compose.yml no longer contains %q; update this case", tc.old)
			}
			broken := strings.Replace(original, tc.old, tc.new, 1)
			project, err := loadCompose(t, []byte(broken))
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("load error %q, want one mentioning %q", err, tc.want)
				}
				return
			}
			problems := checkProject(t, project)
			for _, p := range problems {
				if strings.Contains(p.Error(), tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %v", tc.want, problems)
		})
	}
}

func TestParseHelp(t *testing.T) {
	got := parseHelp("Usage: x\n  -listen address\n    \tlisten here\n  -n int\n    \tcount\n  -v\tverbose\n  -once\n    \tonce\n")
	want := flagSpec{"listen": "address", "n": "int", "v": "", "once": ""}
	if len(got) != len(want) {
		t.Fatalf("parseHelp = %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("flag %s: got %q (present %v), want %q", k, g, ok, v)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
