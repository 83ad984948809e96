{
  description = "rvcluster: declarative k3s clusters on RISC-V boards over plain SSH";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
        rvcluster = pkgs.rustPlatform.buildRustPackage {
          pname = "rvcluster";
          version = "0.1.0";
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # ssh2 builds a vendored OpenSSL and libssh2.
          nativeBuildInputs = [ pkgs.perl pkgs.pkg-config pkgs.installShellFiles ];
          cargoBuildFlags = [ "--package" "rvcluster" ];
          # The integration tests need a real sshd and registry on loopback (see .ci/run); the
          # sandbox has no network namespaces for them, so only unit tests run here.
          cargoTestFlags = [ "--package" "rvcluster" "--lib" ];
          postInstall = ''
            installShellCompletion --cmd rvcluster \
              --bash <($out/bin/rvcluster completions bash) \
              --zsh <($out/bin/rvcluster completions zsh) \
              --fish <($out/bin/rvcluster completions fish)
            $out/bin/rvcluster man > rvcluster.1
            installManPage rvcluster.1
          '';
          meta = {
            description = "Declarative k3s clusters on RISC-V boards over plain SSH";
            license = pkgs.lib.licenses.asl20;
            mainProgram = "rvcluster";
          };
        };
      in {
        packages.default = rvcluster;
        apps.default = flake-utils.lib.mkApp { drv = rvcluster; };
        devShells.default = pkgs.mkShell {
          inputsFrom = [ rvcluster ];
          packages = [
            pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.cargo-nextest
            pkgs.openssh            # sshd for the board lab, ssh/scp as benchmark peers
            pkgs.distribution       # the registry (docker-registry)
            pkgs.skopeo             # checks what was pushed
            pkgs.apacheHttpd        # htpasswd
            pkgs.hyperfine pkgs.util-linux pkgs.iproute2 pkgs.openssl
          ];
        };
      });
}
