; ModuleID = '<string>'
source_filename = "LLVMDialectModule"
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-unknown-linux-gnu"

define void @fusion_1(ptr %0, ptr %1) {
  %3 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %5, i64 4, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %6, i64 16, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %7, i64 16, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %8, i64 1, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %0, 0
  %11 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %10, ptr %0, 1
  %12 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %11, i64 0, 2
  %13 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %12, i64 4, 3, 0
  %14 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %13, i64 16, 4, 0
  %15 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %14, i64 16, 3, 1
  %16 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %15, i64 1, 4, 1
  br label %17

17:                                               ; preds = %73, %2
  %18 = phi i64 [ %74, %73 ], [ 0, %2 ]
  %19 = icmp slt i64 %18, 4
  br i1 %19, label %20, label %75

20:                                               ; preds = %17
  br label %21

21:                                               ; preds = %24, %20
  %22 = phi i64 [ %72, %24 ], [ 0, %20 ]
  %23 = icmp slt i64 %22, 16
  br i1 %23, label %24, label %73

24:                                               ; preds = %21
  %25 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %16, 1
  %26 = mul nuw nsw i64 %18, 16
  %27 = add nuw nsw i64 %26, %22
  %28 = getelementptr inbounds nuw float, ptr %25, i64 %27
  %29 = load float, ptr %28, align 4
  %30 = call float @llvm.maximum.f32(float %29, float -1.040000e+02)
  %31 = call float @llvm.minimum.f32(float %30, float 8.900000e+01)
  %32 = fmul float %31, 0x3FF7154760000000
  %33 = fadd float %32, 0x4168000000000000
  %34 = bitcast float %33 to i32
  %35 = sub i32 %34, 1262485504
  %36 = ashr i32 %35, 1
  %37 = sub i32 %35, %36
  %38 = add i32 %37, 127
  %39 = shl i32 %38, 23
  %40 = bitcast i32 %39 to float
  %41 = add i32 %36, 127
  %42 = shl i32 %41, 23
  %43 = bitcast i32 %42 to float
  %44 = fsub float %33, 0x4168000000000000
  %45 = fmul float %44, 0x3FE62E4000000000
  %46 = fsub float %31, %45
  %47 = fmul float %44, 0x3EB7F7D1C0000000
  %48 = fsub float %46, %47
  %49 = fmul float %48, 0x3EFA057620000000
  %50 = fadd float %49, 0x3F2A2AE380000000
  %51 = fmul float %50, %48
  %52 = fadd float %51, 0x3F56C18440000000
  %53 = fmul float %52, %48
  %54 = fadd float %53, 0x3F8110FC00000000
  %55 = fmul float %54, %48
  %56 = fadd float %55, 0x3FA5555540000000
  %57 = fmul float %56, %48
  %58 = fadd float %57, 0x3FC5555560000000
  %59 = fmul float %58, %48
  %60 = fadd float %59, 5.000000e-01
  %61 = fmul float %48, %48
  %62 = fmul float %61, %60
  %63 = fsub float %62, %47
  %64 = fadd float %46, %63
  %65 = fmul float %43, %64
  %66 = fadd float %43, %65
  %67 = fmul float %66, %40
  %68 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %9, 1
  %69 = mul nuw nsw i64 %18, 16
  %70 = add nuw nsw i64 %69, %22
  %71 = getelementptr inbounds nuw float, ptr %68, i64 %70
  store float %67, ptr %71, align 4
  %72 = add i64 %22, 1
  br label %21

73:                                               ; preds = %21
  %74 = add i64 %18, 1
  br label %17

75:                                               ; preds = %17
  ret void
}

; Function Attrs: nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none)
declare float @llvm.maximum.f32(float, float) #0

; Function Attrs: nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none)
declare float @llvm.minimum.f32(float, float) #0

attributes #0 = { nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none) }

!llvm.module.flags = !{!0}

!0 = !{i32 2, !"Debug Info Version", i32 3}
