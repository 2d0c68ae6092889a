import HTTP1
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Loading the public folder never leaves it, never blocks and never grows without bound.
final class StaticFilesTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/pg-static-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        dir = String(cString: p)
    }

    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func write(_ path: String, _ text: String) {
        let f = fopen(dir + "/" + path, "w")!
        fputs(text, f)
        fclose(f)
    }

    func testLinksOutOfTheFolderLoopsAndFIFOsAreNotFollowed() throws {
        write("index.html", "<h1>hi</h1>")
        mkdir(dir + "/sub", 0o755)
        write("sub/app.js", "1")
        symlink("/etc", dir + "/etc")                    // a folder outside
        symlink("/etc/passwd", dir + "/passwd")          // a file outside
        symlink("..", dir + "/sub/up")                   // a loop
        symlink(".", dir + "/self")                      // another loop
        symlink(dir + "/sub/app.js", dir + "/alias.js")  // a file inside: served
        mkfifo(dir + "/pipe", 0o644)                     // reading it would block start-up
        let files = try StaticFiles(directory: dir)
        XCTAssertEqual(files.count, 3, "index.html, sub/app.js and the alias to it")
        XCTAssertTrue(files.contains("/index.html"))
        XCTAssertTrue(files.contains("/sub/app.js"))
        XCTAssertTrue(files.contains("/alias.js"))
        for path in ["/etc/shadow", "/etc/passwd", "/passwd", "/pipe", "/self/index.html", "/sub/up/index.html"] {
            XCTAssertFalse(files.contains(path), path)
        }
    }

    func testLoadingIsBounded() throws {
        for i in 0..<5 { write("f\(i).txt", String(repeating: "x", count: 100)) }
        var limits = StaticFiles.Limits()
        limits.maxFiles = 4
        XCTAssertThrowsError(try StaticFiles(directory: dir, limits: limits))
        limits = StaticFiles.Limits()
        limits.maxTotalBytes = 450
        XCTAssertThrowsError(try StaticFiles(directory: dir, limits: limits))
        limits = StaticFiles.Limits()
        limits.maxFileBytes = 99
        XCTAssertThrowsError(try StaticFiles(directory: dir, limits: limits))
        var deep = dir
        for _ in 0..<20 { deep += "/d"; mkdir(deep, 0o755) }
        XCTAssertThrowsError(try StaticFiles(directory: dir), "deeper than 16 levels")
        XCTAssertThrowsError(try StaticFiles(directory: dir + "/missing"))
    }
}
